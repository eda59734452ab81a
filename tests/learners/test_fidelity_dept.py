"""DePT over CoOp and over MaPLe against numbers from the official code (Koorye/DePT@12e158c, fp32, CPU).

``tests/golden/official_dept.json`` holds, per base learner, what the official ``ExtrasLinearProbeCoOp`` and
``ExtrasLinearProbeMaPLe`` trainers computed (each entry's NOTE says how) for the seeded random ViT-B/16, 4 seeded
random images and 7 class names as the split files spell them, with every learnable tensor (the CAT head's channel
scales and shifts included, whose official init is the identity) set from a seeded generator. Here the same values
go into vlprompt's ``dept_coop`` / ``dept_maple``: the prompt, head and fused logits, both loss terms, every
gradient of the first step, the parameters after 3 SGD steps with the configs' two learning rates (the head's 6.5
times the prompts'), and the logits on the same names taken as novel classes (the prompt branch alone).
"""

import json
import re

import pytest
import torch
from helpers import GOLDEN_DIR
from mmengine.optim import build_optim_wrapper
from seeded_models import assert_summary, max_diff, seeded_images, seeded_vitb16
from test_fidelity import our_name as maple_name

from vlprompt.engine import load_config
from vlprompt.learners import DePTCoOp, DePTMaPLe

GOLDEN = json.loads((GOLDEN_DIR / "official_dept.json").read_text())
TOL = 1e-4  # logits and losses, max abs difference (observed: see the closing note of the change)
HEAD = {"film_lp_img": "dept_head.image", "film_lp_text": "dept_head.text", "linear_probe_proj": "dept_head.linear"}


def our_name(base: str, official: str) -> str:
    """vlprompt's name of an official DePT parameter."""
    if match := re.fullmatch(r"(film_lp_img|film_lp_text|linear_probe_proj)\.(\w+)", official):
        return f"{HEAD[match[1]]}.{'shift' if match[2] == 'bias' and 'film' in match[1] else match[2]}"
    if base == "coop":
        assert official == "prompt_learner.ctx", official
        return "ctx"
    return maple_name("maple", official)


@pytest.fixture(scope="module")
def clip():
    return seeded_vitb16(0, GOLDEN["coop"]["weights"]["float_sum"])


def build(base: str, clip):
    golden = GOLDEN[base]
    images = seeded_images(golden["images"]["sum"])
    cfg = load_config(f"configs/dept/{base}/caltech101.py")
    settings = {k: v for k, v in cfg.model.learner.items() if k != "type"}
    learner = {"coop": DePTCoOp, "maple": DePTMaPLe}[base](clip, golden["classnames"], **settings)
    params = dict(learner.named_parameters())
    with torch.no_grad():
        for entry in golden["manifest"]:
            p = params[our_name(base, entry["name"])]
            assert list(p.shape) == entry["shape"], entry["name"]
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(entry["seed"])) * entry["scale"])
    for official, ref in golden["kept_official_init"].items():
        assert_summary(params[our_name(base, official)], ref, f"{official} at init")
    return learner, images, torch.tensor(golden["labels"]), cfg


def eval_logits(learner, images):
    learner.eval()
    with torch.no_grad():
        raw = learner.encode_images(images, normalize=False)
        return learner(images), learner.class_logits(torch.nn.functional.normalize(raw, dim=-1)), \
            learner.head_logits(raw)


@pytest.mark.parametrize("base", ["coop", "maple"])
def test_logits_at_init_match_on_base_and_novel_classes(base, clip):
    golden = GOLDEN[base]
    learner, images, _, _ = build(base, clip)
    fused, prompt, head = eval_logits(learner, images)
    ref = golden["logits_init_eval"]
    assert max_diff(prompt, ref["logits_prompt"]) < TOL
    assert max_diff(head, ref["logits_head"]) < TOL
    assert max_diff(fused, ref["logits_fused"]) < TOL
    tokens = [[t for t in row if t] for row in learner.class_token_ids.tolist()]
    assert tokens == [row[:1] + row[1 + learner.n_ctx:] for row in golden["tokenized_prompts"]]
    # the same learned tensors with a head trained on other classes: the 7 names are novel to it
    novel = type(learner)(clip, golden["classnames"], head_classes=[f"seen {name}" for name in golden["classnames"]],
                          **{k: v for k, v in learner.hparams().items() if k != "head_classes"})
    novel.load_state_dict(learner.state_dict())
    novel.eval()
    with torch.no_grad():
        assert max_diff(novel(images), golden["novel"]["init"]["logits_fused"]) < TOL


@pytest.mark.slow  # 3 training steps of both ViT-B/16 towers, twice (about 20 s on 2 quiet cores)
@pytest.mark.parametrize("base", ["coop", "maple"])
def test_three_sgd_steps_under_the_configs_recipe_match_the_official_trainer(base, clip):
    golden = GOLDEN[base]
    learner, images, labels, cfg = build(base, clip)
    wrapper = build_optim_wrapper(learner, cfg.optim_wrapper)
    groups = [g for g in wrapper.optimizer.param_groups if any(p.requires_grad for p in g["params"])]
    lrs = {round(g["lr"], 12) for g in groups}
    assert lrs == {round(lr, 12) for lr in golden["lrs"][0]}  # the prompts' and the head's
    official = {g["lr"]: g for g in golden["optimizer"]["param_groups"]}
    for group in groups:
        ref = official[min(official, key=lambda lr: abs(lr - group["lr"]))]
        assert (group["momentum"], group["weight_decay"]) == (ref["momentum"], ref["weight_decay"])
    params = dict(learner.named_parameters())
    learner.train()
    for step, ref in enumerate(golden["train_steps"]):
        terms = learner.loss(images, labels)
        assert set(terms) == {"loss_ce", "loss_dept"}
        assert abs(terms["loss_ce"].item() / 0.3 - ref["loss_cls"]) < TOL, f"prompt loss before step {step + 1}"
        assert abs(terms["loss_dept"].item() / 0.7 - ref["loss_cls_lp"]) < TOL, f"head loss before step {step + 1}"
        total = sum(terms.values())
        assert abs(total.item() - ref["loss"]) < TOL
        wrapper.zero_grad()
        total.backward()
        if step == 0:
            for name, summary in golden["grads_step1"].items():
                assert_summary(params[our_name(base, name)].grad, summary, f"gradient of {name}", atol=1e-6,
                               rtol=1e-3)
        wrapper.step()
    for name, summary in golden["params_after_3_steps"].items():
        assert_summary(params[our_name(base, name)], summary, f"{name} after 3 steps", atol=1e-6, rtol=1e-4)
    fused, prompt, head = eval_logits(learner, images)
    ref = golden["logits_after_3_steps_eval"]
    assert max_diff(prompt, ref["logits_prompt"]) < TOL
    assert max_diff(head, ref["logits_head"]) < TOL
    assert max_diff(fused, ref["logits_fused"]) < TOL
