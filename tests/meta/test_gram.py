"""GRAM: pair readers, the cross-modal hierarchy, tasks, meta-steps, the regulator and the downstream model."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT
from PIL import Image

from vlprompt.backbones import CheckpointError
from vlprompt.clustering import faiss_kmeans, torch_kmeans
from vlprompt.datasets.pairs import PairReadError, PairSource, write_webdataset
from vlprompt.meta import (
    ClusterSettings,
    GateRegulator,
    IdentityRegulator,
    MetaLearner,
    MetaSettings,
    PairFeatures,
    TaskSampler,
    TaskSettings,
    cross_modal_hierarchy,
    read_gram_file,
    save_gram_file,
)
from vlprompt.meta.gram import build_meta_learner, prompt_parameters
from vlprompt.meta.tasks import TaskConstructionError

TINY = {"name": "test-tiny", "pretrained": None}
COOP = {"type": "coop", "n_ctx": 4, "ctx_init": "a photo of a", "class_token_position": "end"}
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "sea_lion", "star", "jack-o'-lantern"]


def _image(i: int, size: int = 16) -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


# ------------------------------------------------------------------------------------------ readers
def test_webdataset_skips_and_counts_bad_members(tmp_path):
    write_webdataset([(_image(0), "a red circle"), (b"not an image", "broken"), (_image(2), "  "),
                      (_image(3), "a blue star")], tmp_path / "000.tar")
    write_webdataset([(_image(i), f"shape {i}") for i in range(3)], tmp_path / "001.tar")
    whole = (tmp_path / "001.tar").read_bytes()
    (tmp_path / "002.tar").write_bytes(whole[:700])  # truncated mid-member
    source = PairSource("webdataset", str(tmp_path / "{000..002}.tar"), max_failure_fraction=0.5)
    pairs = list(source)
    assert [p.caption for p in pairs] == ["a red circle", "a blue star", "shape 0", "shape 1", "shape 2"]
    assert pairs[0].image.size == (16, 16) and pairs[0].key.endswith("000.tar:000000")
    assert source.stats.read == 5
    assert dict(source.stats.skipped) == {"image does not decode": 1, "missing caption": 1, "unreadable shard": 1}
    assert any("002.tar" in e for e in source.stats.examples)
    with pytest.raises(PairReadError, match=r"000.tar: 2 pairs read, 2 skipped.*max_failure_fraction=0.1"):
        list(PairSource("webdataset", str(tmp_path / "000.tar"), max_failure_fraction=0.1))


def test_tsv_and_jsonl_readers(tmp_path):
    (tmp_path / "img").mkdir()
    for i in range(3):
        _image(i).save(tmp_path / "img" / f"{i}.png")
    (tmp_path / "img" / "bad.png").write_bytes(b"\x89PNG broken")
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("filepath\ttitle\nimg/0.png\ta red circle\nimg/1.png\t\nimg/missing.png\tgone\n"
                   "img/bad.png\tbroken\nimg/2.png\ta sea_lion\n")
    source = PairSource("tsv", str(tsv), max_failure_fraction=0.8)
    assert [p.caption for p in source] == ["a red circle", "a sea_lion"]
    assert dict(source.stats.skipped) == {"missing caption": 1, "missing image": 1, "image does not decode": 1}
    headerless = tmp_path / "plain.tsv"
    headerless.write_text("img/0.png\tfirst\nimg/2.png\tsecond\n")
    assert [p.caption for p in PairSource("tsv", str(headerless))] == ["first", "second"]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(json.dumps({"image": "img/0.png", "caption": "one"}) + "\n{not json\n"
                     + json.dumps({"filepath": "img/1.png", "text": "two"}) + "\n")
    source = PairSource("jsonl", str(jsonl), max_failure_fraction=0.5, limit=5)
    assert [p.caption for p in source] == ["one", "two"]
    assert source.stats.failed == 1
    assert [p.caption for p in PairSource("jsonl", str(jsonl), max_failure_fraction=0.5, limit=1)] == ["one"]
    with pytest.raises(PairReadError, match="file not found"):
        PairSource("tsv", str(tmp_path / "nope.tsv"))
    with pytest.raises(PairReadError, match="no shard found"):
        PairSource("webdataset", str(tmp_path / "none-{0..3}.tar"))
    with pytest.raises(PairReadError, match="not one of"):
        PairSource("parquet", str(tsv))


# -------------------------------------------------------------------------------------- clustering
def _features(n: int = 240, dim: int = 32, images: bool = False, seed: int = 0) -> PairFeatures:
    """Pairs in 4 well-separated domains x 6 pseudo-classes, captions with underscores and odd names."""
    g = torch.Generator().manual_seed(seed)
    domain_centres = torch.randn(4, dim, generator=g) * 3
    class_offsets = torch.randn(4, 6, dim, generator=g)
    d = torch.arange(n) % 4
    c = (torch.arange(n) // 4) % 6
    image = domain_centres[d] + class_offsets[d, c] + 0.1 * torch.randn(n, dim, generator=g)
    text = domain_centres[d] + class_offsets[d, c] + 0.1 * torch.randn(n, dim, generator=g)
    captions = [f"a {COLOURS[int(d[i])]} {SHAPES[int(c[i]) % len(SHAPES)]}." for i in range(n)]
    pixels = np.random.default_rng(seed).integers(0, 255, (n, 3, 32, 32), dtype=np.uint8) if images else None
    return PairFeatures(torch.nn.functional.normalize(image, dim=1), torch.nn.functional.normalize(text, dim=1),
                        captions, pixels)


def test_hierarchy_is_deterministic_and_nested():
    features = _features()
    settings = ClusterSettings(domains=4, classes_per_domain=6, seed=3)
    first, again = cross_modal_hierarchy(features, settings), cross_modal_hierarchy(features, settings)
    assert np.array_equal(first.domain, again.domain) and np.array_equal(first.pseudo_class, again.pseudo_class)
    assert first.class_names == again.class_names
    # pseudo-classes are nested in domains, and the planted structure is found
    assert np.array_equal(first.class_domain[first.pseudo_class], first.domain)
    assert len(first.class_names) == 24
    planted = (np.arange(240) % 4) * 6 + (np.arange(240) // 4) % 6
    assert all(len(set(first.pseudo_class[planted == k])) == 1 for k in range(24))
    assert all(not name.endswith(".") for name in first.class_names)  # "a red sea_lion", not "a red sea_lion."


def _same_partition(a, b) -> bool:
    return len({(int(i), int(j)) for i, j in zip(a, b, strict=True)}) == len(set(np.asarray(a).tolist()))


def test_pseudo_classes_are_named_by_distinctive_phrases():
    from vlprompt.meta.tasks import distinctive_phrases

    groups = [["a photo of a red sea_lion.", "a red sea_lion on a dark background", "there is a red sea_lion"],
              ["a photo of a blue star.", "a sketch of a blue star", "two blue stars"],
              ["a photo of a blue star", "a photo of a blue star next to a circle"],
              ["a photo of."]]
    names = distinctive_phrases(groups, domains=[0, 0, 0, 1])
    assert names[0] == "red sea_lion"  # in every caption of its group, in no other group
    assert {names[1], names[2]} == {"blue", "blue star"}  # one domain: two names
    assert names[3] == "photo"  # "a photo of": the function words are trimmed
    assert distinctive_phrases([["of the"]]) == ["of the"]  # no phrase at all: the caption itself


def test_faiss_and_torch_kmeans_find_the_planted_domains():
    from vlprompt.clustering import kmeanspp

    x = _features().joint()
    planted = np.arange(240) % 4
    _, fa = faiss_kmeans(x.numpy(), 4, seed=1)
    seeds = x[kmeanspp(x.numpy(), 4, np.random.default_rng(0))]
    _, ta = torch_kmeans(x, 4, init_centroids=seeds)
    assert _same_partition(fa, planted) and _same_partition(ta.numpy(), planted)
    _, again = faiss_kmeans(x.numpy(), 4, seed=1)
    assert np.array_equal(fa, again)
    with pytest.raises(ValueError, match="cannot make 500 clusters of 240 points"):
        faiss_kmeans(x.numpy(), 500)


def test_tasks_stay_in_one_domain_and_queries_come_from_another():
    features = _features()
    hierarchy = cross_modal_hierarchy(features, ClusterSettings(domains=4, classes_per_domain=6))
    sampler = TaskSampler(hierarchy, TaskSettings(n_way=3, k_shot=2, q_query=3))
    rng = np.random.default_rng(0)
    for _ in range(10):
        task, other = sampler.episode(rng)
        assert task.domain != other.domain
        assert set(hierarchy.domain[np.concatenate([task.support, task.query])]) == {task.domain}
        assert len(task.support) == 6 and len(task.query) == 9 and not set(task.support) & set(task.query)
        labels = hierarchy.pseudo_class[task.support]
        assert len(set(labels)) == 3
        assert [hierarchy.class_names[k] for k in labels[::2]] == task.class_names
        assert np.array_equal(task.support_labels, [0, 0, 1, 1, 2, 2])
    with pytest.raises(TaskConstructionError, match="cross-domain queries need 2"):
        TaskSampler(hierarchy, TaskSettings(n_way=3, k_shot=10, q_query=10))


# --------------------------------------------------------------------------------------- regulator
def test_regulators():
    g = torch.randn(4, 8)
    assert IdentityRegulator({"ctx": (4, 8)})("ctx", g) is g
    gate = GateRegulator({"ctx": (4, 8)})
    assert torch.equal(gate("ctx", g), g)  # zero parameters: exactly the identity
    with torch.no_grad():
        gate.weight["ctx"].normal_()
        gate.bias["ctx"].normal_()
    out = gate("ctx", g)
    assert not torch.equal(out, g)
    ratio = out / g
    assert ratio.min() > 0 and ratio.max() < 2
    torch.testing.assert_close(gate("ctx", 1024.0 * g), 1024.0 * out)  # blind to the loss scale
    torch.testing.assert_close(gate("ctx", -g), -out)  # odd: gradient noise does not drift the prompt
    scale_only = GateRegulator({"text_deep.1": (2, 3)}, from_gradient=False)
    assert list(scale_only.weight) == [] and "text_deep__1" in scale_only.bias


# ---------------------------------------------------------------------------------------- meta-step
def _meta(learner_cfg=COOP, images=False, **settings):
    learner, regulator = build_meta_learner(learner_cfg, TINY, {"type": "gate"}, ["object", "shape"])
    features = _features(images=images)
    if not images:  # CoOp trains on cached image features of the backbone's width
        features.image = torch.nn.functional.normalize(torch.randn(len(features), learner.backbone.embed_dim), dim=1)
    hierarchy = cross_modal_hierarchy(_features(), ClusterSettings(domains=4, classes_per_domain=6))
    sampler = TaskSampler(hierarchy, TaskSettings(n_way=3, k_shot=2, q_query=2))
    defaults = dict(inner_steps=2, inner_lr=0.5, outer_lr=1e-2, regulator_lr=1e-1, meta_batch=1)
    return MetaLearner(learner, regulator, features, sampler, MetaSettings(**{**defaults, **settings}))


@pytest.mark.parametrize("learner_cfg, images", [(COOP, False), ({"type": "vpt", "n_ctx": 2, "depth": 2}, True)])
def test_one_meta_step_changes_only_the_initialisation_and_the_regulator(learner_cfg, images):
    meta = _meta(learner_cfg, images=images)
    learner = meta.learner
    assert meta.cached is (learner_cfg["type"] == "coop")
    backbone = {k: v.clone() for k, v in learner.backbone.state_dict().items()}
    init = {k: v.detach().clone() for k, v in prompt_parameters(learner).items()}
    buffers = {k: v.clone() for k, v in learner.named_buffers()}
    regulator = {k: v.clone() for k, v in meta.regulator.state_dict().items()}
    record = meta.meta_step()
    assert record["iteration"] == 1 and np.isfinite(record["outer_loss"])
    assert all(torch.equal(v, learner.backbone.state_dict()[k]) for k, v in backbone.items())
    learner.set_classes(["object", "shape"])  # class buffers follow each task's classes: back to the first
    assert all(torch.equal(v, dict(learner.named_buffers())[k]) for k, v in buffers.items())
    assert all(not torch.equal(v, prompt_parameters(learner)[k]) for k, v in init.items())
    changed = [k for k, v in meta.regulator.state_dict().items() if not torch.equal(v, regulator[k])]
    assert sorted(changed) == sorted(regulator)


def test_ablations_learn_only_their_part():
    meta = _meta(learn_init=False)
    init = {k: v.detach().clone() for k, v in prompt_parameters(meta.learner).items()}
    meta.meta_step()
    assert all(torch.equal(v, prompt_parameters(meta.learner)[k]) for k, v in init.items())
    meta = _meta(learn_regulator=False)
    before = {k: v.clone() for k, v in meta.regulator.state_dict().items()}
    meta.meta_step()
    assert all(torch.equal(v, meta.regulator.state_dict()[k]) for k, v in before.items())


def _outer_loss(meta, task, other):
    fast, _ = meta.adapt(task)
    return meta.task_loss(fast, other, query=True)


@pytest.mark.parametrize("second_order", [False, True])
def test_meta_gradient_matches_finite_differences(second_order):
    """With one inner step the first-order gradient of the regulator is exact, and second order is exact
    for the initialisation too: both against a central difference of the outer loss (float64)."""
    meta = _meta(inner_steps=1, second_order=second_order)
    meta.learner.double()
    meta.regulator.double()
    meta.features.image = meta.features.image.double()
    with torch.no_grad():  # a non-trivial gate
        for p in meta.regulator.parameters():
            p.normal_(0, 0.5)
    task, other = meta.sampler.episode(np.random.default_rng(5))
    from torch.nn.attention import SDPBackend, sdpa_kernel

    params = [*meta.params.values(), *meta.regulator.parameters()]
    with sdpa_kernel([SDPBackend.MATH]):  # as MetaLearner.meta_step runs second order
        loss = _outer_loss(meta, task, other)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    checks = list(meta.regulator.parameters()) + (list(meta.params.values()) if second_order else [])
    for param in checks:
        grad = grads[next(i for i, p in enumerate(params) if p is param)]
        direction = torch.randn_like(param)
        eps = 1e-5
        with torch.no_grad():
            param.add_(eps * direction)
        up = float(_outer_loss(meta, task, other).detach())
        with torch.no_grad():
            param.sub_(2 * eps * direction)
        down = float(_outer_loss(meta, task, other).detach())
        with torch.no_grad():
            param.add_(eps * direction)
        numeric = (up - down) / (2 * eps)
        assert float((grad * direction).sum()) == pytest.approx(numeric, rel=1e-4, abs=1e-8)


def test_first_order_differs_from_second_order_for_the_initialisation():
    results = []
    for second_order in (False, True):
        torch.manual_seed(0)
        meta = _meta(inner_steps=2, second_order=second_order)
        meta.meta_step()
        results.append(meta.learner.ctx.detach().clone())
    assert not torch.allclose(results[0], results[1])


# ----------------------------------------------------------------------------------- meta-training
def _pairs_tsv(tmp_path, n=96) -> Path:
    """A TSV of coloured-square images whose captions name the colour (two colour families = domains)."""
    (tmp_path / "img").mkdir(exist_ok=True)
    rows = ["filepath\ttitle"]
    rgb = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30),
           "purple": (140, 30, 160), "orange": (240, 140, 20)}
    names = list(rgb)
    for i in range(n):
        colour = names[i % len(names)]
        noise = np.random.default_rng(i).integers(-20, 20, (32, 32, 3))
        pixels = np.clip(np.array(rgb[colour]) + noise + (0 if i % 2 else 60), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / "img" / f"{i}.png")
        rows.append(f"img/{i}.png\ta {'bright ' if i % 2 == 0 else ''}{colour} square_tile")
    (tmp_path / "pairs.tsv").write_text("\n".join(rows) + "\n")
    return tmp_path / "pairs.tsv"


def _meta_cfg(tsv, **meta):
    return {"backbone": TINY, "learner": COOP, "pairs": {"format": "tsv", "path": str(tsv)},
            "clustering": {"domains": 2, "classes_per_domain": 3, "seed": 1},
            "tasks": {"n_way": 2, "k_shot": 2, "q_query": 2},
            "meta": {"iterations": 6, "inner_steps": 2, "checkpoint_interval": 2, "seed": 1, **meta},
            "regulator": {"type": "gate"}, "encode_batch_size": 32}


def test_meta_training_resumes_where_it_stopped(tmp_path):
    from vlprompt.meta.run import meta_train

    tsv = _pairs_tsv(tmp_path)
    whole = read_gram_file(meta_train(_meta_cfg(tsv), tmp_path / "whole", log=lambda _: None))
    assert whole.info["iterations"] == 6 and whole.info["pairs"]["read"] == 96
    assert whole.info["tasks_per_second"] > 0
    # stopped after 4 steps (a saved state), then run again with the full length
    meta_train(_meta_cfg(tsv, iterations=4), tmp_path / "split", log=lambda _: None)
    (tmp_path / "split/gram.safetensors").unlink()
    logs = []
    resumed = read_gram_file(meta_train(_meta_cfg(tsv), tmp_path / "split", log=logs.append))
    assert any("resumed" in line and "meta-iteration 4" in line for line in logs)
    for key, value in whole.init.items():
        assert torch.equal(value, resumed.init[key]), key
    for key, value in whole.regulator_state.items():
        assert torch.equal(value, resumed.regulator_state[key]), key
    # the state of another config is not continued
    with pytest.raises(CheckpointError, match="state of another meta-training"):
        meta_train(_meta_cfg(tsv, inner_lr=0.5), tmp_path / "split", log=lambda _: None)


# ------------------------------------------------------------------------------------- downstream
def _gram_file(path, learner_cfg=COOP, backbone=TINY, regulator_scale=None):
    learner, regulator = build_meta_learner(learner_cfg, backbone, {"type": "gate"}, ["a", "b"])
    with torch.no_grad():
        for p in prompt_parameters(learner).values():
            p.add_(0.25)
        if regulator_scale is not None:
            for p in regulator.parameters():
                p.fill_(regulator_scale)
    return save_gram_file(path, learner, backbone, regulator, {"test": True})


GRAM_CONFIG = str(ROOT / "configs/gram/coop/toy_shapes.py")


def _train(tmp_path, name, *options, epochs=1, config=GRAM_CONFIG, resume=False):
    """tools/train.py (no test) on the toy CoOp config or its GRAM variant, with toy_run's fast settings."""
    import uuid

    from toy_run import FAST, train_tool

    argv = [config, "--work-dir", str(tmp_path / name), "--no-test", "--cfg-options", *FAST,
            f"train_cfg.max_epochs={epochs}", f"experiment_name=run_{uuid.uuid4().hex[:8]}", *options]
    return train_tool.main(argv + (["--resume"] if resume else []))


def _learned(tmp_path, name):
    from vlprompt.engine.checkpoint import read_learned

    return read_learned(tmp_path / name / "learned.safetensors")


PLAIN_CONFIG = str(ROOT / "configs/coop/toy_shapes.py")


def test_identity_regulator_is_plain_training_bit_for_bit(tmp_path):
    _train(tmp_path, "plain", "randomness.seed=3", config=PLAIN_CONFIG)
    _train(tmp_path, "identity", "randomness.seed=3", "model.gram.file=None", "model.gram.init=False",
           "model.gram.regulator=identity")
    plain, identity = _learned(tmp_path, "plain")[0], _learned(tmp_path, "identity")[0]
    assert torch.equal(plain["ctx"], identity["ctx"])
    # a regulator that is not the identity does change the training
    gram = _gram_file(tmp_path / "gram.safetensors", regulator_scale=-1.0)
    _train(tmp_path, "gated", "randomness.seed=3", f"model.gram.file={gram}", "model.gram.init=False")
    assert not torch.equal(plain["ctx"], _learned(tmp_path, "gated")[0]["ctx"])


@pytest.mark.slow  # 2 epochs, then resumed to 3 (the identity-regulator test trains GRAM by default)
def test_gram_learner_trains_through_the_engine_and_round_trips(tmp_path):
    from toy_run import FAST

    from vlprompt.engine import build_runner, load_config
    from vlprompt.engine.checkpoint import load_learner

    gram = _gram_file(tmp_path / "gram.safetensors", regulator_scale=0.3)
    options = dict(item.split("=", 1) for item in FAST)
    options = {k: None if v == "None" else int(v) if v.isdigit() else v for k, v in options.items()}
    cfg = load_config(ROOT / "configs/gram/coop/toy_shapes.py", work_dir=str(tmp_path / "built"),
                      options={**options, "model.gram.file": str(gram)})
    runner = build_runner(cfg)
    assert torch.equal(runner.model.learner.ctx.detach(), read_gram_file(gram).init["ctx"])  # starts from the file
    _train(tmp_path, "run", f"model.gram.file={gram}", epochs=2)
    state, meta = _learned(tmp_path, "run")
    assert not torch.equal(state["ctx"], read_gram_file(gram).init["ctx"])  # it trained
    assert meta["gram"] == {"file": str(gram), "init": True, "regulate": True, "regulator": None}
    learner = load_learner(tmp_path / "run/learned.safetensors")  # a plain CoOp checkpoint
    assert learner.learner_name == "coop" and torch.equal(learner.ctx.detach(), state["ctx"])
    # resuming continues the run's own parameters, not the file's initialisation
    _train(tmp_path, "run", f"model.gram.file={gram}", epochs=3, resume=True)
    resumed = _learned(tmp_path, "run")[0]
    assert not torch.equal(resumed["ctx"], state["ctx"])


def test_sweeps_reuse_a_gram_run_only_while_its_file_is_the_same(tmp_path):
    from vlprompt.engine.sweep import effective_config

    gram = _gram_file(tmp_path / "gram.safetensors")
    options = [f"model.gram.file={gram}"]
    first = effective_config(GRAM_CONFIG, options)
    assert first["input_files"] == {"model.gram.file": hashlib.sha256(gram.read_bytes()).hexdigest()}
    assert effective_config(GRAM_CONFIG, options) == first
    _gram_file(gram, regulator_scale=0.5)  # meta-trained again, same path
    assert effective_config(GRAM_CONFIG, options)["input_files"] != first["input_files"]


def test_mismatched_gram_file_stops_before_training(tmp_path):
    other_length = _gram_file(tmp_path / "n2.safetensors", {**COOP, "n_ctx": 2, "ctx_init": ""})
    with pytest.raises(CheckpointError, match=r"meta-trained for learner 'coop'.*n_ctx=2.*trains learner 'coop'"
                                              r".*n_ctx=4.*differ in: ctx_init, n_ctx"):
        _train(tmp_path, "a", f"model.gram.file={other_length}")
    other_learner = _gram_file(tmp_path / "vpt.safetensors", {"type": "vpt", "n_ctx": 2, "depth": 2})
    with pytest.raises(CheckpointError, match=r"learner 'vpt'.*trains learner 'coop'.*differ in: type"):
        _train(tmp_path, "b", f"model.gram.file={other_learner}")
    with pytest.raises(CheckpointError, match=r"on backbone 'test-tiny'.*on backbone 'toy'.*differ in: backbone"):
        _train(tmp_path, "c", f"model.gram.file={tmp_path / 'n2.safetensors'}", "model.backbone.name=toy",
               "model.backbone.pretrained=toy", "model.learner.n_ctx=2", "model.learner.ctx_init=")
    assert not (tmp_path / "a").exists() or not list((tmp_path / "a").glob("*.pth"))
    with pytest.raises(CheckpointError, match="GRAM file not found"):
        _train(tmp_path, "d", f"model.gram.file={tmp_path / 'missing.safetensors'}")


def test_gram_file_names_only_registered_code(tmp_path):
    from vlprompt.backbones import read_safetensors, save_safetensors

    path = _gram_file(tmp_path / "gram.safetensors")
    tensors, raw = read_safetensors(path)
    meta = json.loads(raw["vlprompt"])
    for key, value, message in (("learner", {"type": "os.system"}, "not a registered learner"),
                                ("regulator", {"type": "builtins.eval"}, "not a registered regulator"),
                                ("kind", "learned", "not a GRAM meta-trained file")):
        save_safetensors(tensors, tmp_path / "bad.safetensors", {"vlprompt": json.dumps({**meta, key: value})})
        with pytest.raises(CheckpointError, match=message):
            read_gram_file(tmp_path / "bad.safetensors")


def _comment(path: Path) -> str:
    """A config's comment lines as one line of text."""
    return " ".join(line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#"))


def test_gram_configs_load_and_point_at_their_meta_configs():
    from vlprompt.engine import load_config
    from vlprompt.engine.compose import list_methods
    from vlprompt.meta.run import meta_config, resolve_downstream

    variants = [m for m in list_methods() if m.startswith("gram/")]
    assert set(variants) == {f"gram/{v}" for v in ("coop", "coop_init_only", "coop_regulator_only", "maple",
                                                     "promptsrc", "unigram", "vpt")}
    datasets = ("toy_hues", "toy_shapes", "imagenet", "imagenet_xd", "caltech101", "oxford_pets", "stanford_cars",
                "oxford_flowers", "food101", "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
    for variant in variants:
        assert "reimplemented from the paper" in _comment(ROOT / "configs" / variant / "_method.py")
        for dataset in datasets:  # composed runs: configs/gram/<variant>/<dataset>.py need no file
            path = ROOT / "configs" / variant / f"{dataset}.py"
            cfg = load_config(path)
            file = cfg.model.gram.file
            meta_path = ROOT / "configs/gram" / f"{Path(file).parent.name}.py"
            assert meta_path.is_file(), (path, file)
            meta = resolve_downstream(load_config(meta_path))
            assert meta.learner.to_dict() == cfg.model.learner.to_dict(), path  # the file fits its learner
            assert meta.backbone.to_dict() == cfg.model.backbone.to_dict(), path
    for path in sorted((ROOT / "configs/gram").glob("meta_*.py")):
        meta_config(resolve_downstream(load_config(path)))  # every section is valid
        assert "reimplemented from the paper" in _comment(path)
