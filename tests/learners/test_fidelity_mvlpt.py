"""MCoOp, MVPT and MUPT against the official MVLPT trainer (sIncerass/MVLPT), fp32 on CPU.

``tests/golden/official_mvlpt.json`` holds what the unmodified official code computed (its NOTE says
how) for the seeded random ViT-B/16 of the other fidelity tests, 4 seeded random images and 7 class
names with underscores: the logits at init, the per-task masked logits, MUPT's coupled prompts (and
what a token-mixing block would give), the loss of each of 3 SGD steps, the gradients of the first,
the parameters after the third and the logits after them (at the published lr 0.002 and at lr 0.1,
where MVPT's prompts move enough to be a meaningful check). Every learnable parameter starts from
``randn(shape, Generator().manual_seed(1000 + i)) * 0.02`` in sorted official-name order.

The forward checks run in the default suite (about 15 s); the training checks (3 steps of a ViT-B/16
on 4 images, twice per family, 10-60 s each on 2 CPU cores) are ``slow``.
"""

import json
import re

import pytest
import torch
from helpers import GOLDEN_DIR
from seeded_models import seeded_vitb16

from vlprompt.backbones import PromptableCLIP
from vlprompt.learners import MUPT, MVPT, MCoOp
from vlprompt.learners.mvlpt.model import apply_task_mask

GOLDEN = json.loads((GOLDEN_DIR / "official_mvlpt.json").read_text())
NAMES, LABELS, TASKS = GOLDEN["classnames"], GOLDEN["labels"], GOLDEN["tasks"]
TOL = 1e-4  # logits, losses: max abs difference
#: the published families: MVLPT's scripts (main_mt_coopdata_cut.sh) for each
LEARNERS = {"mcoop": lambda clip: MCoOp(clip, NAMES, n_ctx=16),
            "mvpt": lambda clip: MVPT(clip, NAMES, n_ctx=16, depth=12),
            "mupt": lambda clip: MUPT(clip, NAMES, n_ctx_text=4, n_ctx_vision=4, depth=12, project_dim=128)}
_RENAMES = [
    (r"prompt_learner\.ctx", "ctx"),
    (r"prompt_learner\.vpt_embeddings", "vision_ctx"),
    (r"prompt_learner\.vpt_embeddings_deep", "vision_deep"),
    (r"prompt_learner\.mvlpt_proj\.resblocks\.0\.(.+)", r"coupler.\1"),
    (r"prompt_learner\.mvlpt_proj_ctx_coop_pre\.(.+)", r"text_down.\1"),
    (r"prompt_learner\.mvlpt_proj_ctx_coop_post\.(.+)", r"text_up.\1"),
    (r"prompt_learner\.mvlpt_proj_ctx_vpt_pre\.(.+)", r"vision_down.\1"),
    (r"prompt_learner\.mvlpt_proj_ctx_vpt_post\.(.+)", r"vision_up.\1"),
]


def our_name(official: str) -> str:
    for pattern, ours in _RENAMES:
        if re.fullmatch(pattern, official):
            return re.sub(pattern, ours, official)
    raise KeyError(f"no vlprompt parameter for official {official!r}")


@pytest.fixture(scope="module")
def vitb16():
    return seeded_vitb16(0, GOLDEN["weights"]["float_sum"])


@pytest.fixture(scope="module")
def inputs():
    torch.manual_seed(1)
    return torch.randn(4, 3, 224, 224)


def build(family: str, clip: PromptableCLIP, **overrides):
    """The learner with the golden parameter values (the official shapes reshaped to vlprompt's)."""
    learner = LEARNERS[family](clip) if not overrides else type(LEARNERS[family](clip))(clip, NAMES, **overrides)
    params = dict(learner.named_parameters())
    with torch.no_grad():
        for entry in GOLDEN[family]["manifest"]:
            g = torch.Generator().manual_seed(entry["seed"])
            value = torch.randn(entry["shape"], generator=g) * 0.02
            p = params[our_name(entry["name"])]
            assert value.numel() == p.numel(), entry["name"]
            p.copy_(value.reshape(p.shape))
    return learner


def summary_diff(t: torch.Tensor, ref: dict) -> float:
    """The largest disagreement with an official (shape, sum, abs_sum, first8) summary, relative to its size."""
    t = t.detach().double().reshape(ref["shape"])
    first = (t.flatten()[:8] - torch.tensor(ref["first8"], dtype=torch.float64)).abs().max().item()
    sums = max(abs(t.sum().item() - ref["sum"]), abs(t.abs().sum().item() - ref["abs_sum"])) / max(ref["abs_sum"], 1)
    return max(first, sums)


def max_diff(a: torch.Tensor, ref) -> float:
    return (a.detach().double() - torch.tensor(ref, dtype=torch.float64)).abs().max().item()


def logits_of(learner, images):
    learner.eval()
    with torch.no_grad():
        return learner(images)


@pytest.fixture(scope="module")
def init_logits(vitb16, inputs):
    """Each family's logits at the golden init, computed once."""
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = logits_of(build(family, vitb16), inputs)
        return cache[family]

    return get


# ------------------------------------------------------------------------------------------ layout
@pytest.mark.parametrize("family", list(LEARNERS))
def test_parameters_map_one_to_one_with_the_official_ones(family, vitb16):
    learner = LEARNERS[family](vitb16)
    ours = {k: p.numel() for k, p in learner.named_parameters() if p.requires_grad}
    official = {our_name(e["name"]): int(torch.Size(e["shape"]).numel()) for e in GOLDEN[family]["manifest"]}
    assert ours == official
    assert sum(ours.values()) == GOLDEN[family]["n_learnable"] == {"mcoop": 8192, "mvpt": 147_456,
                                                                    "mupt": 566_400}[family]
    if family != "mvpt":  # the class prompts: the official ones with the context slots taken out
        n = learner.n_ctx
        for ids, row in zip(learner.class_token_ids, GOLDEN[family]["tokenized_prompts"], strict=True):
            assert ids[ids > 0].tolist() == row[:1] + row[1 + n:]


# ------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("family", list(LEARNERS))
def test_logits_at_init_match_the_official_model(family, init_logits):
    assert max_diff(init_logits(family), GOLDEN[family]["eval"]["logits"]) < TOL


def test_mupt_coupling_is_the_official_per_token_map(vitb16):
    golden = GOLDEN["mupt"]["mupt_coupling"]
    with torch.no_grad():
        text, shallow, deep = build("mupt", vitb16).coupled_prompts()
        assert summary_diff(text, golden["coupled_ctx"]) < 1e-6
        assert summary_diff(shallow, golden["coupled_vpt"]) < 1e-6
        assert summary_diff(deep, golden["coupled_vpt_deep"]) < 1e-6
        # the labelled deviation is what the official block gives when its tokens form one sequence
        text, shallow, deep = build("mupt", vitb16, token_mixing=True).coupled_prompts()
        assert summary_diff(text, golden["token_mixing_coupled_ctx"]) < 1e-6
        assert summary_diff(deep, golden["token_mixing_coupled_vpt_deep"]) < 1e-6
    assert golden["max_abs_diff_coupled_ctx"] > 1e-4  # and it differs from the official output


def test_mcoop_per_task_mask_is_the_official_multiply_by_zero(init_logits):
    golden = GOLDEN["mcoop"]["pertask_mask"]
    ranges = torch.tensor([[0, 4], [4, 7]])
    masked = apply_task_mask(init_logits("mcoop"), torch.tensor(golden["tasks"]), ranges, "zero")
    assert max_diff(masked, golden["logits"]) < TOL
    assert (masked[:2, 4:] == 0).all() and (masked[2:, :4] == 0).all()


# ------------------------------------------------------------------------------------ training
def _train(family, clip, images, golden, lr):
    learner = build(family, clip)
    params = dict(learner.named_parameters())
    opt = GOLDEN[family]["optimizer"]
    optimizer = torch.optim.SGD([p for p in learner.parameters() if p.requires_grad], lr=lr,
                                momentum=opt["momentum"], weight_decay=opt["weight_decay"],
                                dampening=opt["dampening"], nesterov=opt["nesterov"])
    labels = torch.tensor(LABELS)
    learner.train()
    losses, grads = [], {}
    for step in range(3):
        total = sum(learner.loss(images, labels).values())
        losses.append(total.item())
        optimizer.zero_grad()
        total.backward()
        if step == 0:
            grads = {name: params[our_name(name)].grad.clone() for name in GOLDEN[family]["grad_step1"]}
        optimizer.step()
    return learner, params, losses, grads


def _check_training(family, vitb16, inputs, lr_key):
    golden = GOLDEN[family] if lr_key is None else GOLDEN[family][lr_key]
    lr = GOLDEN[family]["optimizer"]["lr"] if lr_key is None else golden["lr"]
    learner, params, losses, grads = _train(family, vitb16, inputs, golden, lr)
    assert max(abs(a - b) for a, b in zip(losses, golden["sgd_loss_per_step"], strict=True)) < TOL
    if lr_key is None:
        for name, ref in GOLDEN[family]["grad_step1"].items():
            assert summary_diff(grads[name], ref) < 1e-5, f"gradient of {name}"
    for name, ref in golden["params_after_3_steps"].items():
        assert summary_diff(params[our_name(name)], ref) < 1e-5, f"{name} after 3 steps"
    assert max_diff(logits_of(learner, inputs), golden["after_3_steps_eval"]["logits"]) < TOL


@pytest.mark.slow
@pytest.mark.parametrize("family", list(LEARNERS))
@pytest.mark.parametrize("lr_key", [None, "large_lr"])
def test_three_sgd_steps_match_the_official_trainer(family, lr_key, vitb16, inputs):
    _check_training(family, vitb16, inputs, lr_key)
