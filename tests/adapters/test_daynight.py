"""Similarity Min-Max day-night adaptation (vlprompt.daynight).

* Fidelity: the darkening module's forward, each stage-1 loss term, one stage-1 training step and the
  stage-2 BYOL heads and term equal what the official Red-Fairy/ZeroShotDayNightDA code computed
  (``tests/golden/official_smm.json``, made by /work/official/smm/make_golden.py; its NOTE says how),
  max abs difference below 1e-5 in fp32.
* Stage 1 and stage 2 train end to end through ``tools/train.py`` on the toy world and on a fake
  CODaN tree (random tiny backbone, a narrow darkening module, one epoch each); a second run in the
  same work dir skips stage 1; the checkpoint holds the learner's parameters alone.
* No night image reaches training: every file opened while the toy and CODaN configs build their
  training data and train is recorded, and none is a night image.
* Bad input (a night training split, an exposure range outside [0, 1], a darkening module of another
  architecture) stops before training with a message naming the key or the file.
"""

import builtins
import json
import math
import uuid
from pathlib import Path

import PIL.Image
import pytest
import torch
from fake_data import make_fake_root
from helpers import GOLDEN_DIR, ROOT
from tool_loader import load_tool

from vlprompt.daynight import (
    DarkeningNet,
    ProjectionHead,
    SimilarityMax,
    byol_pair_loss,
    colour_constancy_loss,
    exposure_loss,
    feature_similarity,
    flexibility_loss,
    load_darkening,
    loose_tv_loss,
    save_darkening,
)
from vlprompt.errors import UserError

train_tool = load_tool("train")  # tools/train.py, by its file
GOLDEN = json.loads((GOLDEN_DIR / "official_smm.json").read_text())
TOL = 1e-5
TOY = str(ROOT / "configs/smm/toy_shapes.py")
CODAN = str(ROOT / "configs/smm/codan.py")
# A tiny, fast variant: random-init 32 px backbone, a narrow darkening module, one epoch of each stage.
FAST = ["model.backbone.name=test-tiny", "model.backbone.pretrained=None", "model.darkening.width=8",
        "model.darkening.epochs=1", "model.darkening.batch_size=8", "train_cfg.max_epochs=1",
        "train_dataloader.batch_size=8", "train_dataloader.num_workers=0", "test_dataloader.num_workers=0",
        "default_hooks.logger.interval=1"]
TOY_FAST = [*FAST, "train_dataloader.dataset.num_shots=1"]


def _train(config: str, work: Path, *options: str, test: bool = False, resume: bool = False) -> dict:
    argv = [config, "--work-dir", str(work), "--cfg-options", *options, f"experiment_name=run_{uuid.uuid4().hex[:8]}"]
    return train_tool.main(argv + ([] if test else ["--no-test"]) + (["--resume"] if resume else []))


# ------------------------------------------------------------------------------------------ fidelity
#: official name -> vlprompt name (both in named_parameters order)
def _vlprompt_name(official: str) -> str:
    block, kind, what = official.split(".")
    part = {"depth_conv": "depthwise", "point_conv": "pointwise"}[kind]
    return f"blocks.{int(block.removeprefix('e_conv'))}.{part}.{what}"


def _recipe(index: int, shape: list[int]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1000 + index)
    value = torch.randn(tuple(shape), generator=gen)
    return value * math.prod(shape[1:]) ** -0.5 if len(shape) > 1 else value * 0.05


def _fill(module: torch.nn.Module, rows: list, rename=lambda name: name) -> None:
    params = dict(module.named_parameters())
    assert [rename(name) for name, _, _ in rows] == list(params), "parameter order differs from the official one"
    with torch.no_grad():
        for i, (name, shape, total) in enumerate(rows):
            p = params[rename(name)]
            assert list(p.shape) == shape, name
            p.copy_(_recipe(i, shape))
            assert float(p.double().sum()) == pytest.approx(total, rel=1e-9, abs=1e-9), name


def _close(value: torch.Tensor, expected: list | float, what: str) -> float:
    expected = torch.tensor(expected, dtype=torch.float32).reshape(value.shape)
    diff = float((value.detach().float() - expected).abs().max())
    assert diff < TOL, f"{what}: max abs difference {diff:.2e} from the official code"
    return diff


@pytest.fixture(scope="module")
def official_inputs():
    d = GOLDEN["darkening"]
    net = DarkeningNet(width=64, curve_rounds=8, min_scale=0.95)
    _fill(net, d["params"], _vlprompt_name)
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    assert float(image.double().sum()) == pytest.approx(d["inputs"]["image_sum"], rel=1e-12)
    gen = torch.Generator().manual_seed(8)
    exp_map = torch.rand(2, 1, 1, 1, generator=gen) * 0.2 + torch.randn(2, 1, 16, 16, generator=gen) * 0.025
    assert float(exp_map.double().sum()) == pytest.approx(d["inputs"]["exposure_map_sum"], rel=1e-9)
    matrix = torch.randn(768, 8, generator=torch.Generator().manual_seed(11)) / math.sqrt(768)
    exposure = torch.tensor(d["inputs"]["exposure"]).view(2, 1, 1, 1)
    return net, image, exposure, exp_map, matrix


def test_darkening_forward_and_stage1_losses_match_official(official_inputs):
    d = GOLDEN["darkening"]
    net, image, exposure, exp_map, matrix = official_inputs
    assert d["buffers"] == {"down_scale": pytest.approx(0.95), "curve_round": 8, "encode_dim": 1}
    net.train()
    darkened, curve, scale = net(image, exposure)
    _close(darkened, d["outputs"]["darkened"], "darkened image")
    _close(curve, d["outputs"]["curve"], "curve map A")
    _close(scale, d["outputs"]["scale"], "scale B")
    _close(net(image, exp_map)[0], d["outputs"]["darkened_exposure_map"], "darkened image (exposure map)")

    def features(x):
        return x.reshape(x.shape[0], -1) @ matrix

    terms = {
        "tv": loose_tv_loss(curve, 0.02), "color": colour_constancy_loss(darkened), "down": flexibility_loss(scale),
        "exp": 10.0 * exposure_loss(darkened, exposure),  # the official L_exp holds its weight 10 inside
        "sim": feature_similarity(features(image), features(darkened)),
    }
    for name, value in terms.items():
        _close(value, d["loss_terms"][name], f"loss term {name}")
    total = sum(d["loss_weights"][k] * v for k, v in terms.items())
    _close(total, d["loss_total"], "stage-1 loss")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=1e-4)
    optimizer.zero_grad()
    total.backward()
    norm = torch.nn.utils.clip_grad_norm_(net.parameters(), 0.1)
    assert float(norm) == pytest.approx(d["step"]["grad_norm_before_clip"], rel=1e-5)
    optimizer.step()
    with torch.no_grad():
        _close(net(image, exposure)[0], d["step"]["darkened_after_step"], "darkened image after one stage-1 step")


def test_darkening_loss_class_uses_the_official_weights(official_inputs):
    """DarkeningLoss (what stage 1 optimises) is the official total for the same features."""
    from vlprompt.daynight import DarkeningLoss

    d = GOLDEN["darkening"]
    net, image, exposure, _, matrix = official_inputs
    fresh = DarkeningNet()
    _fill(fresh, d["params"], _vlprompt_name)
    terms = DarkeningLoss(lambda x: x.reshape(x.shape[0], -1) @ matrix)(fresh.train(), image, exposure)
    _close(sum(terms.values()), d["loss_total"], "DarkeningLoss total")


def test_byol_heads_and_term_match_official():
    b = GOLDEN["byol"]
    proj, pred, target = ProjectionHead(12, 128), ProjectionHead(128, 128, kaiming=False), ProjectionHead(12, 128)
    _fill(proj, b["proj_params"])
    _fill(pred, b["pred_params"])
    _fill(target, b["proj_params"])
    with torch.no_grad():
        for p in target.parameters():
            p.mul_(0.9)
    gen = torch.Generator().manual_seed(21)
    day, night = torch.randn(4, 12, generator=gen), torch.randn(4, 12, generator=gen)
    norm = torch.nn.functional.normalize
    q_day, q_night = norm(pred(proj(day)), dim=1), norm(pred(proj(night)), dim=1)
    k_night, k_day = norm(target(night), dim=1), norm(target(day), dim=1)
    _close(q_day, b["online_day"], "online prediction (day)")
    _close(q_night, b["online_night"], "online prediction (night)")
    _close(k_night, b["target_night"], "target (night)")
    _close(k_day, b["target_day"], "target (day)")
    _close(byol_pair_loss(q_day, k_night, q_night, k_day, 0.1), b["loss"], "BYOL term")


# ------------------------------------------------------------------------------------------ units
def test_similarity_term_trains_a_text_only_learner_and_follows_by_ema(clip):
    """With CoOp the image embedding cannot move: the term compares class scores, so it reaches the
    context; the target follows the online parameters with momentum 0.99."""
    from vlprompt.learners import build_learner

    torch.manual_seed(0)
    learner = build_learner("coop", clip, ["cat", "dog", "car"], n_ctx=4, ctx_init="")
    sim = SimilarityMax(learner, 3, dim=16, momentum=0.99)
    assert sim.representation == "scores"
    day, night = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    feats = learner.encode_images(torch.cat([day, night]))
    rep = sim.representation_of(feats, learner.encode_classes(feats))
    # the target reuses the (frozen) image features of a text-only learner: the same as recomputing them
    assert torch.allclose(sim.target_representation(torch.cat([day, night])),
                          sim.target_representation(torch.cat([day, night]), feats), atol=1e-6)
    before = sim.target_state()["ctx"].clone()
    with torch.no_grad():
        learner.ctx.add_(1.0)  # the online context moves away from the target
    loss = sim.loss(day, night, rep[:4], rep[4:])
    loss.backward()
    assert learner.ctx.grad is not None and float(learner.ctx.grad.abs().sum()) > 0
    assert torch.allclose(sim.target_state()["ctx"], 0.99 * before + 0.01 * learner.ctx.detach(), atol=1e-6)
    assert not any(k.startswith("learner") for k in sim.state_dict())  # the learner is not duplicated here


def test_darkening_file_round_trip_and_darkens(tmp_path):
    torch.manual_seed(0)
    net = DarkeningNet(width=8)
    path = save_darkening(net, tmp_path / "d.safetensors", {"note": "test"})
    again = load_darkening(path, {"width": 8, "curve_rounds": 8, "min_scale": 0.95})
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(net.eval()(x, 0.1)[0], again(x, 0.1)[0])
    with torch.no_grad():  # a positive curve map darkens: x + A (x^2 - x) <= x
        curve, scale = torch.full((2, 3, 8, 8), 0.8), torch.ones(2, 3, 8, 8)
        assert bool((net.apply_curve(x, curve, scale) <= x + 1e-7).all())


# ------------------------------------------------------------------------------- end to end, no night
@pytest.fixture
def opened(monkeypatch):
    """Every path opened (``open``, ``PIL.Image.open``) while the fixture is active, as ``(path, reporting)``:
    ``reporting`` is True while the day/night report (which tests on night images) is running."""
    from vlprompt.daynight import DayNightReportHook

    paths: list[tuple[str, bool]] = []
    state = {"reporting": False}
    real_open, real_image_open = builtins.open, PIL.Image.open

    def spy_open(file, *args, **kwargs):
        paths.append((str(file), state["reporting"]))
        return real_open(file, *args, **kwargs)

    def spy_image_open(fp, *args, **kwargs):
        paths.append((str(getattr(fp, "name", fp)), state["reporting"]))
        return real_image_open(fp, *args, **kwargs)

    def reporting(method):
        def wrapped(self, *args, **kwargs):
            state["reporting"] = True
            try:
                return method(self, *args, **kwargs)
            finally:
                state["reporting"] = False
        return wrapped

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(PIL.Image, "open", spy_image_open)
    for name in ("before_train", "after_train"):
        monkeypatch.setattr(DayNightReportHook, name, reporting(getattr(DayNightReportHook, name)))
    return paths


def _images(paths: list[tuple[str, bool]], reporting: bool) -> list[str]:
    return [p for p, r in paths if r == reporting and p.lower().endswith((".png", ".jpg", ".jpeg"))]


def _no_night_in_training(paths: list[tuple[str, bool]], config: str) -> None:
    """Training opened day images and not one night file; the report did open night images (the spy
    would have seen them anywhere)."""
    training = [p for p, r in paths if not r]
    assert len(_images(paths, False)) >= 30, f"{config}: the spy saw no training images"
    night = [p for p in training if "night" in p.lower()]
    assert not night, f"{config}: training opened night files, e.g. {night[:3]}"
    assert any("night" in p.lower() for p in _images(paths, True)), "the report read no night image"


def test_toy_both_stages_end_to_end_no_night_image(tmp_path, opened):
    from vlprompt.engine.checkpoint import load_learner, read_learned

    work = tmp_path / "smm"
    _train(TOY, work, *TOY_FAST, "custom_hooks.1.before=False", "custom_hooks.1.limit=150")  # 150 scenes
    _no_night_in_training(opened, TOY)
    logged = [json.loads(line) for line in next(work.glob("*/vis_data/scalars.json")).read_text().splitlines()]
    assert {"loss_ce_day", "loss_ce_night", "loss_sim"} <= set().union(*logged)
    dark = work / "darkening.safetensors"
    assert dark.is_file() and (work / "darkening.json").is_file()
    report = json.loads((work / "daynight.json").read_text())
    assert report["method"] == "smm" and report["stage1"]["skipped"] is False
    after = report["after"]
    assert after["day/images"] == after["night/images"] == after["gap/pairs"] == 150
    assert 0 < after["night/top1"] <= 100 and -1 <= after["gap/pair_cosine"] <= 1 and report["before"] is None
    assert report["stage1"]["seconds"] > 0 and report["stage2_seconds"] > 0
    with PIL.Image.open(work / "darkening_grid.png") as picture:
        assert picture.format == "PNG" and picture.size[1] > 4 * 32  # day, two darkened rows, real night
    state, meta = read_learned(work / "learned.safetensors")
    assert set(state) == {"ctx"} and meta["learner"]["type"] == "coop"  # the learner's parameters alone
    assert load_learner(work / "learned.safetensors").class_names == meta["class_names"]


@pytest.mark.slow  # three CODaN runs (resume, ablation); the toy run stays in the default run
def test_codan_fake_tree_end_to_end_no_night_image_resume_and_the_ablation(tmp_path, opened):
    root = tmp_path / "data"
    make_fake_root(root, ["codan"])
    work = tmp_path / "codan"
    opened.clear()
    metrics = _train(CODAN, work, *FAST, f"data_root={root}", "train_dataloader.batch_size=4", test=True)
    assert "accuracy/top1" in metrics
    _no_night_in_training(opened, CODAN)
    report = json.loads((work / "daynight.json").read_text())
    for when in ("before", "after"):
        assert report[when]["day/images"] == report[when]["night/images"] == 20
    assert "gap/pair_cosine" not in report["after"] and report["after"]["gap/mmd_rbf"] >= 0
    # resumed in the same work dir: stage 1 is skipped (its module is there), stage 2 goes on
    dark = work / "darkening.safetensors"
    stamp = dark.stat().st_mtime_ns
    _train(CODAN, work, *FAST, f"data_root={root}", "train_dataloader.batch_size=4", "train_cfg.max_epochs=2",
           "custom_hooks.1.picture=0", resume=True)
    assert dark.stat().st_mtime_ns == stamp
    report = json.loads((work / "daynight.json").read_text())
    assert report["stage1"]["skipped"] is True and report["epochs"] == 2 and report["before"] is None
    # the ablation (no similarity term) with the stage-1 module given by path
    ablation = tmp_path / "ablation"
    _train(CODAN, ablation, *FAST, f"data_root={root}", "train_dataloader.batch_size=4",
           "model.similarity.weight=0", f"model.darkening.path={work / 'darkening.safetensors'}",
           "custom_hooks.1.before=False", "custom_hooks.1.picture=0")
    report = json.loads((ablation / "daynight.json").read_text())
    assert report["similarity_weight"] == 0.0 and report["stage1"]["skipped"] is True
    assert not (ablation / "darkening.safetensors").exists()


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(("config", "options", "names"), [
    (TOY, ["train_dataloader.dataset.name=toy-shapes-night", "train_dataloader.dataset.split=test"],
     "train_dataloader.dataset"),
    (CODAN, ["train_dataloader.dataset.split=test_night"], "test_night"),
    (TOY, ["model.darkening.exposure_range=[0.0,1.5]"], "model.darkening.exposure_range"),
    (TOY, ["model.night_view.exposure_range=[-0.1,0.2]"], "model.night_view.exposure_range"),
])
def test_bad_config_stops_before_training(tmp_path, opened, config, options, names):
    root = tmp_path / "data"
    make_fake_root(root, ["codan"])
    opened.clear()
    with pytest.raises(UserError, match=names.replace(".", r"\.")):
        _train(config, tmp_path / "w", *FAST, f"data_root={root}", *options)
    assert not _images(opened, False), "images were read before the config was refused"
    assert not (tmp_path / "w" / "darkening.safetensors").exists()


def test_darkening_checkpoint_of_another_architecture_is_refused(tmp_path):
    other = save_darkening(DarkeningNet(width=16), tmp_path / "wide16.safetensors")
    with pytest.raises(UserError, match=r"wide16\.safetensors.*another architecture"):
        _train(TOY, tmp_path / "w", *TOY_FAST, f"model.darkening.path={other}")
    from vlprompt.backbones import save_safetensors

    foreign = tmp_path / "learned.safetensors"
    save_safetensors({"ctx": torch.zeros(4, 8)}, foreign, {"vlprompt": "{}"})
    with pytest.raises(UserError, match=r"learned\.safetensors: not a darkening module"):
        _train(TOY, tmp_path / "w", *TOY_FAST, f"model.darkening.path={foreign}")
    # a work dir whose darkening.safetensors does not fit is refused at stage 1, naming it
    work = tmp_path / "w2"
    work.mkdir()
    save_darkening(DarkeningNet(width=16), work / "darkening.safetensors")
    with pytest.raises(UserError, match=r"w2/darkening\.safetensors.*another architecture"):
        _train(TOY, work, *TOY_FAST)
    assert not (work / "learned.safetensors").exists() and not list(work.glob("*.pth"))


def test_a_reused_darkening_module_must_come_from_this_stage1_config_and_weights(tmp_path):
    """Issue 30 item 3: the work dir's darkening.safetensors from another stage-1 config is not reused
    silently, and a module given by path must come from this run's CLIP weights; the record says which."""
    from dataclasses import asdict

    from vlprompt.daynight.darkening import DarkeningSettings

    settings = json.loads(json.dumps(asdict(DarkeningSettings(epochs=7, batch_size=8, lr=1e-3))))  # the toy's lr
    work = tmp_path / "w"
    work.mkdir()
    save_darkening(DarkeningNet(width=8), work / "darkening.safetensors", {"settings": settings})
    with pytest.raises(UserError, match=r"w/darkening\.safetensors was trained by another stage-1 config "
                                        r"\(epochs: 7 -> 1\);"):
        _train(TOY, work, *TOY_FAST)
    assert not (work / "learned.safetensors").exists()
    other = save_darkening(DarkeningNet(width=8), tmp_path / "other.safetensors",
                           {"settings": settings, "backbone_weights": "0123456789abcdef"})
    with pytest.raises(UserError, match=r"other\.safetensors was trained \(stage 1\) on backbone weights "
                                        r"0123456789abcdef, .* has random \(untrained\) weights"):
        _train(TOY, tmp_path / "w3", *TOY_FAST, f"model.darkening.path={other}")
