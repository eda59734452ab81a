"""MaPLe and PromptSRC (and, for class names with underscores, CoOp, CoCoOp, KgCoOp and zero-shot
CLIP) against numbers from their official implementations (fp32, CPU).

``tests/golden/official_maple_promptsrc.json`` holds what the authors' code computed (its NOTE
says how) for a seeded random ViT-B/16, 4 seeded random images and 10 class names, with every
learnable parameter set from a seeded generator (the "manifest": official parameter name, shape,
seed). Here the same backbone is built, the same values go into vlprompt's parameters (mapped by
name), and logits, every loss term, gradients and the parameters after 3 SGD steps must agree.

``tests/golden/official_underscore_names.json`` holds the official trainers' prompts and logits
for 7 class names as the split files spell them (``american_bulldog``, ``Apply_Eye_Makeup``, ...):
every official trainer writes them with spaces, and so must vlprompt (its NOTE says how they were
made).

The whole file takes about 90 s on 2 CPU cores (one ViT-B/16 built once per module; 6 backward
passes for the training comparison).
"""

import json
import re

import pytest
import torch
import torch.nn.functional as F
from helpers import GOLDEN_DIR
from seeded_models import assert_summary, max_diff, seeded_vitb16

from vlprompt.backbones import PromptableCLIP
from vlprompt.datasets.templates import get_template
from vlprompt.learners import CoCoOp, CoOp, KgCoOp, MaPLe, PromptSRC, ZeroShotCLIP

GOLDEN = json.loads((GOLDEN_DIR / "official_maple_promptsrc.json").read_text())
UNDERSCORE = json.loads((GOLDEN_DIR / "official_underscore_names.json").read_text())
LEARNERS = {"maple": MaPLe, "promptsrc": PromptSRC}
TOL = 1e-4  # logits and losses, max abs difference (observed: ~2e-6)


def our_name(method: str, official: str) -> str:
    """vlprompt's name of an official learnable parameter."""
    rules = {
        "maple": [
            (r"prompt_learner\.ctx", lambda m: "ctx"),
            (r"prompt_learner\.proj\.(weight|bias)", lambda m: f"proj.0.{m[1]}"),
            (r"prompt_learner\.compound_prompts_text\.(\d+)", lambda m: f"text_deep.{int(m[1]) + 1}"),
            (r"prompt_learner\.compound_prompt_projections\.(\d+)\.(weight|bias)",
             lambda m: f"proj.{int(m[1]) + 1}.{m[2]}"),
        ],
        "promptsrc": [
            (r"prompt_learner\.ctx", lambda m: "ctx"),
            (r"text_encoder\.transformer\.resblocks\.(\d+)\.VPT_shallow", lambda m: f"text_deep.{m[1]}"),
            (r"image_encoder\.VPT", lambda m: "vision_ctx"),
            (r"image_encoder\.transformer\.resblocks\.(\d+)\.VPT_shallow", lambda m: f"vision_deep.{m[1]}"),
        ],
    }[method]
    for pattern, name in rules:
        if match := re.fullmatch(pattern, official):
            return name(match)
    raise KeyError(f"no vlprompt parameter for official {official!r}")


@pytest.fixture(scope="module")
def vitb16():
    assert UNDERSCORE["weights"]["float_sum"] == GOLDEN["weights"]["float_sum"], "both golden files: one backbone"
    return seeded_vitb16(0, GOLDEN["weights"]["float_sum"])


@pytest.fixture(scope="module")
def inputs():
    torch.manual_seed(1)
    return torch.randn(4, 3, 224, 224)


def build(method: str, clip: PromptableCLIP):
    """The learner with the golden parameter values."""
    golden = GOLDEN[method]
    learner = LEARNERS[method](clip, golden["classnames"])
    params = dict(learner.named_parameters())
    with torch.no_grad():
        for entry in golden["manifest"]:
            p = params[our_name(method, entry["name"])]
            assert list(p.shape) == entry["shape"], entry["name"]
            if entry["seed"] is not None:
                g = torch.Generator().manual_seed(entry["seed"])
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return learner


# ------------------------------------------------------------------------------------------ layout
@pytest.mark.parametrize("method", ["maple", "promptsrc"])
def test_parameters_map_one_to_one_with_the_official_ones(method, vitb16):
    golden = GOLDEN[method]
    learner = LEARNERS[method](vitb16, golden["classnames"])
    ours = {k: list(p.shape) for k, p in learner.named_parameters() if p.requires_grad}
    official = {our_name(method, e["name"]): e["shape"] for e in golden["manifest"]}
    assert ours == official
    assert sum(p.numel() for p in learner.parameters() if p.requires_grad) == golden["n_learnable"]
    assert golden["n_learnable"] == {"maple": 3_555_072, "promptsrc": 46_080}[method]
    assert set(learner.state_dict()) == set(ours), "only learned parameters in checkpoints"
    # the context starts from the official init: token embeddings of "a photo of a"
    assert_summary(learner.ctx, golden["ctx_init"], "ctx init", atol=0, rtol=0)
    # the class prompts are the official ones with the learned slots taken out
    n = learner.n_ctx
    row = golden["tokenized_prompt_first_row"]
    ids = learner.class_token_ids[0]
    assert ids[ids > 0].tolist() == row[:1] + row[1 + n :]


# ------------------------------------------------------------------------------------- forward
def _loss_with_logits(learner, images, labels, monkeypatch):
    """One training-mode loss call (no autograd), with the logits it computed (the official
    training logits equal the eval ones) and the backbone's unprompted image features."""
    seen = {}
    logits_fn, encode_image = learner.logits, learner.backbone.encode_image

    def logits(*args, **kwargs):
        seen["logits"] = logits_fn(*args, **kwargs)
        return seen["logits"]

    def frozen_image(images, prompts=None, normalize=False):
        out = encode_image(images, prompts, normalize)
        if prompts is None:
            seen["frozen_image"] = out
        return out

    monkeypatch.setattr(learner, "logits", logits)
    monkeypatch.setattr(learner.backbone, "encode_image", frozen_image)
    learner.train()
    with torch.no_grad():
        losses = learner.loss(images, labels)
    return losses, seen


def test_maple_logits_and_loss(vitb16, inputs, monkeypatch):
    golden = GOLDEN["maple"]
    learner = build("maple", vitb16)
    losses, seen = _loss_with_logits(learner, inputs, torch.tensor(golden["labels"]), monkeypatch)
    assert max_diff(seen["logits"], golden["eval"]["logits"]) < TOL
    assert set(losses) == {"loss_ce"}
    assert abs(losses["loss_ce"].item() - golden["train"]["loss_ce"]) < TOL
    assert "frozen_image" not in seen  # MaPLe has no frozen-feature term


@pytest.mark.slow  # PromptSRC's 60-template frozen features on a ViT-B/16 (45 s)
def test_promptsrc_logits_and_every_loss_term(vitb16, inputs, monkeypatch):
    golden = GOLDEN["promptsrc"]
    train = golden["train"]
    learner = build("promptsrc", vitb16)
    losses, seen = _loss_with_logits(learner, inputs, torch.tensor(golden["labels"]), monkeypatch)
    assert max_diff(seen["logits"], golden["eval"]["logits"]) < TOL
    assert set(losses) == {"loss_ce", "loss_scl_text", "loss_scl_image", "loss_scl_logits"}
    for name, value in losses.items():
        assert abs(value.item() - train[name]) < TOL, (name, value.item(), train[name])
        assert abs(value.item() - train[name]) <= 1e-3 * abs(train[name]) + 1e-8, name  # small terms too
    assert abs(sum(losses.values()).item() - train["loss_total"]) < TOL

    # the text targets: the mean of the RAW frozen features over the 60 templates
    assert len(learner.templates) == train["n_templates"] == 60
    raw = learner.text_targets_raw
    assert_summary(raw, train["text_targets_raw"], "raw text targets", atol=1e-5)
    assert max_diff(raw.norm(dim=-1), train["text_targets_raw_norms"]) < 1e-4
    # the zero-shot logits: the unprompted image features of the same backbone against the targets
    zs = F.normalize(seen["frozen_image"], dim=-1)
    assert max_diff(vitb16.logit_scale * zs @ learner.text_targets().t(), train["zero_shot_logits"]) < TOL


# ------------------------------------------------------------------------------------ training
@pytest.mark.slow  # three official training steps on a ViT-B/16 (40-60 s each)
@pytest.mark.parametrize("method", ["maple", "promptsrc"])
def test_three_sgd_steps_match_the_official_trainer(method, vitb16, inputs):
    golden = GOLDEN[method]
    learner = build(method, vitb16)
    labels = torch.tensor(golden["labels"])
    names = {e["name"]: our_name(method, e["name"]) for e in golden["manifest"]}
    params = dict(learner.named_parameters())
    opt = golden["optimizer"]
    optimizer = torch.optim.SGD([p for p in learner.parameters() if p.requires_grad], lr=opt["lr"],
                                momentum=opt["momentum"], weight_decay=opt["weight_decay"],
                                dampening=opt["dampening"], nesterov=opt["nesterov"])
    learner.train()
    for step, expected in enumerate(golden["sgd_loss_per_step"]):
        total = sum(learner.loss(inputs, labels).values())
        assert abs(total.item() - expected) < TOL, f"loss before step {step + 1}"
        optimizer.zero_grad()
        total.backward()
        if step == 0:
            for official, ref in golden["grad_step1"].items():
                assert_summary(params[names[official]].grad, ref, f"gradient of {official}", atol=1e-6, rtol=1e-3)
        optimizer.step()
    for official, ref in golden["params_after_3_steps"].items():
        assert_summary(params[names[official]], ref, f"{official} after 3 steps", atol=1e-7, rtol=1e-5)
    learner.eval()
    with torch.no_grad():
        logits = learner(inputs)
    assert max_diff(logits, golden["after_3_steps_eval"]["logits"]) < TOL


# ------------------------------------------------------------------- class names with underscores
#: golden entry -> how vlprompt builds the same learner (constructor, keyword arguments)
UNDERSCORE_LEARNERS = {
    "coop_end": (CoOp, dict(n_ctx=4, ctx_init="a photo of a", class_token_position="end")),
    "coop_middle": (CoOp, dict(n_ctx=4, ctx_init="a photo of a", class_token_position="middle")),
    "coop_front": (CoOp, dict(n_ctx=4, ctx_init="a photo of a", class_token_position="front")),
    "coop_csc_random": (CoOp, dict(n_ctx=4, ctx_init="", class_specific=True)),
    "cocoop": (CoCoOp, dict(n_ctx=4, ctx_init="a photo of a")),
    "kgcoop": (KgCoOp, dict(n_ctx=4, ctx_init="a photo of a", w=8.0, template=get_template("oxford-pets", "kgcoop"))),
    "maple": (MaPLe, {}),
    "promptsrc": (PromptSRC, {}),
}
#: the largest differences measured against the official numbers (logits, losses), for the record
UNDERSCORE_TOL = 1e-4


def underscore_name(official: str) -> str:
    """vlprompt's name of an official CoOp / CoCoOp / KgCoOp / MaPLe / PromptSRC learnable parameter."""
    if official.startswith("prompt_learner.meta_net."):
        return official.removeprefix("prompt_learner.")
    if official == "prompt_learner.ctx":
        return "ctx"
    method = "maple" if "compound" in official or official.startswith("prompt_learner.proj") else "promptsrc"
    return our_name(method, official)


def build_underscore(key: str, clip: PromptableCLIP, **overrides):
    """The vlprompt learner of golden entry ``key`` on the 7 names, with the golden parameter values."""
    golden = UNDERSCORE[key]
    cls, kwargs = UNDERSCORE_LEARNERS[key]
    learner = cls(clip, UNDERSCORE["classnames"], **{**kwargs, **overrides})
    params = dict(learner.named_parameters())
    with torch.no_grad():
        for entry in golden["manifest"]:
            p = params[underscore_name(entry["name"])]
            assert list(p.shape) == entry["shape"], entry["name"]
            if entry["seed"] is not None:
                g = torch.Generator().manual_seed(entry["seed"])
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    assert {k for k, p in learner.named_parameters() if p.requires_grad} == {
        underscore_name(e["name"]) for e in golden["manifest"]}
    return learner


def test_the_underscore_case_is_the_split_files_spelling():
    names = UNDERSCORE["classnames"]
    assert len(names) == 7 and sum("_" in n for n in names) == 4
    assert {"american_bulldog", "apple_pie", "Apply_Eye_Makeup", "sea_lion"} <= set(names)


@pytest.mark.parametrize("key", sorted(UNDERSCORE_LEARNERS))
def test_class_prompts_are_the_official_ones_for_underscore_names(key, vitb16):
    """The tokens of every class prompt: the official tokenized prompt with the learned slots out."""
    learner = build_underscore(key, vitb16)
    assert learner.class_names == UNDERSCORE["classnames"], "names are kept as given"
    n = learner.n_ctx
    for ids, row in zip(learner.class_token_ids, UNDERSCORE[key]["tokenized_prompts"], strict=True):
        assert ids[ids > 0].tolist() == row[:1] + row[1 + n :]


def _eval(learner, images):
    learner.eval()
    with torch.no_grad():
        return learner(images)


@pytest.mark.parametrize("key", sorted(k for k in UNDERSCORE_LEARNERS if k not in ("maple", "promptsrc")))
def test_coop_family_logits_match_the_official_trainers_for_underscore_names(key, vitb16, inputs):
    golden = UNDERSCORE[key]
    learner = build_underscore(key, vitb16)
    assert max_diff(_eval(learner, inputs), golden["logits"]) < UNDERSCORE_TOL
    if key == "kgcoop":
        labels = torch.tensor(UNDERSCORE["labels"])
        learner.train()
        with torch.no_grad():
            losses = learner.loss(inputs, labels)
        ce = F.cross_entropy(torch.tensor(golden["logits"]), labels).item()
        assert abs(losses["loss_ce"].item() - ce) < UNDERSCORE_TOL
        assert abs(losses["loss_kg"].item() - 8.0 * golden["score"]) < UNDERSCORE_TOL
        assert_summary(learner.clip_class_features, golden["clip_text_features"], "frozen template features")


def test_coop_class_specific_with_ctx_init_is_the_official_shared_context(vitb16, inputs):
    """Official CoOp applies CSC only to random init: with CTX_INIT the context is one shared copy."""
    golden = UNDERSCORE["coop_csc_ctxinit"]
    assert golden["opts"][golden["opts"].index("TRAINER.COOP.CSC") + 1] is True
    with pytest.warns(UserWarning, match="class_specific=True is ignored with ctx_init='a photo of a'"):
        learner = CoOp(vitb16, UNDERSCORE["classnames"], n_ctx=4, ctx_init="a photo of a", class_specific=True)
    assert list(learner.ctx.shape) == golden["ctx"]["shape"] == [4, 512]
    assert learner.hparams()["class_specific"] is False, "the checkpoint records what was built"
    assert max_diff(_eval(learner, inputs), golden["logits"]) < UNDERSCORE_TOL


def test_zero_shot_clip_matches_coops_zeroshot_trainer_for_underscore_names(vitb16, inputs):
    golden = UNDERSCORE["zsclip"]
    learner = ZeroShotCLIP(vitb16, UNDERSCORE["classnames"], templates=get_template("oxford-pets", "coop"))
    assert_summary(learner.class_features, golden["text_features"], "zero-shot text features")
    assert max_diff(_eval(learner, inputs), golden["logits"]) < UNDERSCORE_TOL


def test_maple_matches_the_official_trainer_for_underscore_names(vitb16, inputs, monkeypatch):
    golden = UNDERSCORE["maple"]
    learner = build_underscore("maple", vitb16)
    assert max_diff(_eval(learner, inputs), golden["logits"]) < UNDERSCORE_TOL
    losses, _ = _loss_with_logits(learner, inputs, torch.tensor(UNDERSCORE["labels"]), monkeypatch)
    assert abs(losses["loss_ce"].item() - golden["train"]["loss_ce"]) < UNDERSCORE_TOL


@pytest.mark.slow  # as test_promptsrc_logits_and_every_loss_term (35 s)
def test_promptsrc_matches_the_official_trainer_for_underscore_names(vitb16, inputs, monkeypatch):
    golden = UNDERSCORE["promptsrc"]
    train = golden["train"]
    learner = build_underscore("promptsrc", vitb16)
    assert max_diff(_eval(learner, inputs), golden["logits"]) < UNDERSCORE_TOL
    losses, seen = _loss_with_logits(learner, inputs, torch.tensor(UNDERSCORE["labels"]), monkeypatch)
    for name, value in losses.items():
        assert abs(value.item() - train[name]) < UNDERSCORE_TOL, (name, value.item(), train[name])
    # the 60-template targets are built from the names with spaces too
    assert_summary(learner.text_targets_raw, train["text_targets_raw"], "raw text targets", atol=1e-5)
    zs = F.normalize(seen["frozen_image"], dim=-1)
    assert max_diff(vitb16.logit_scale * zs @ learner.text_targets().t(), train["zero_shot_logits"]) < UNDERSCORE_TOL
