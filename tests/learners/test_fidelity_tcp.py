"""TCP against numbers from its official code (htyao89/Textual-based_Class-aware_prompt_tuning@bd97bec, fp32, CPU).

``tests/golden/official_tcp.json`` holds what the official ``TCP`` trainer computed (its NOTE says how) for the
seeded random ViT-B/16, 4 seeded random images and 7 class names as the split files spell them (ImageNet's
templates), with the context and the token network set from a seeded generator. Here the same values go into
vlprompt's ``tcp``: the frozen template features, the class-aware tokens, the logits, both loss terms, every
gradient of the first step, the parameters after 3 Adam steps under the config's optimiser (eps 1e-3, coupled
weight decay), the logits after them, and the logits on three other (novel) class names.
"""

import json

import pytest
import torch
from helpers import GOLDEN_DIR
from mmengine.optim import build_optim_wrapper
from seeded_models import assert_summary, max_diff, seeded_images, seeded_vitb16

from vlprompt.engine import load_config
from vlprompt.learners import TCP

GOLDEN = json.loads((GOLDEN_DIR / "official_tcp.json").read_text())
TOL = 1e-4  # logits and losses, max abs difference (observed: see the closing note of the change)


def our_name(official: str) -> str:
    """``prompt_learner.ctx`` -> ``ctx``, ``prompt_learner.meta_net.*`` -> ``meta_net.*``."""
    assert official.startswith("prompt_learner."), official
    return official.removeprefix("prompt_learner.")


@pytest.fixture(scope="module")
def setup():
    clip = seeded_vitb16(0, GOLDEN["weights"]["float_sum"])
    images = seeded_images(GOLDEN["images"]["sum"])
    cfg = load_config("configs/tcp/imagenet.py")
    learner = TCP(clip, GOLDEN["classnames"], **{k: v for k, v in cfg.model.learner.items() if k != "type"})
    params = dict(learner.named_parameters())
    assert set(params) == {our_name(e["name"]) for e in GOLDEN["manifest"]}
    with torch.no_grad():
        for entry in GOLDEN["manifest"]:
            p = params[our_name(entry["name"])]
            assert list(p.shape) == entry["shape"], entry["name"]
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(entry["seed"])) * entry["scale"])
    return learner, images, torch.tensor(GOLDEN["labels"]), cfg


def eval_logits(learner, images):
    learner.eval()
    with torch.no_grad():
        return learner(images)


def test_prompts_frozen_features_class_tokens_and_logits_at_init_match(setup):
    learner, images, _, _ = setup
    assert learner.layer == GOLDEN["recipe_facts"]["class_token_insert_block"] == 8
    tokens = [[t for t in row if t] for row in learner.class_token_ids.tolist()]
    assert tokens == [row[:1] + row[5:] for row in GOLDEN["tokenized_prompts"]]  # "a photo of a" is the context
    assert max_diff(learner.clip_class_features, GOLDEN["frozen_text_features_normalised_full"]) < 1e-6
    with torch.no_grad():
        assert_summary(learner.class_tokens(), GOLDEN["class_tokens_init"], "class-aware tokens", rtol=1e-4)
    assert max_diff(eval_logits(learner, images), GOLDEN["logits_init_eval"]["logits"]) < TOL


@pytest.mark.slow  # 3 training steps of the ViT-B/16 text tower (about 10 s on 2 quiet cores)
def test_three_adam_steps_under_the_configs_recipe_match_the_official_trainer(setup):
    learner, images, labels, cfg = setup
    wrapper = build_optim_wrapper(learner, cfg.optim_wrapper)
    group = wrapper.optimizer.param_groups[0]
    official = GOLDEN["optimizer"]
    assert type(wrapper.optimizer).__name__ == official["optimizer"]
    assert (group["lr"], group["eps"], group["weight_decay"], list(group["betas"])) == \
        (official["lr"], official["eps"], official["weight_decay"], official["betas"])
    params = dict(learner.named_parameters())
    learner.train()
    for step, ref in enumerate(GOLDEN["losses_per_step"]):
        terms = learner.loss(images, labels)
        assert set(terms) == {"loss_ce", "loss_kg"}
        assert abs(terms["loss_ce"].item() - ref["loss_ce"]) < TOL, f"cross-entropy before step {step + 1}"
        assert abs(terms["loss_kg"].item() - ref["kg_term_weighted"]) < TOL, f"knowledge term before step {step + 1}"
        wrapper.zero_grad()
        sum(terms.values()).backward()
        if step == 0:
            for name, summary in GOLDEN["grads_step1"].items():
                assert_summary(params[our_name(name)].grad, summary, f"gradient of {name}", atol=1e-6, rtol=1e-3)
        wrapper.step()
    for name, summary in GOLDEN["params_after_3_steps"].items():
        assert_summary(params[our_name(name)], summary, f"{name} after 3 steps", atol=1e-6, rtol=1e-4)
    assert max_diff(eval_logits(learner, images), GOLDEN["logits_after_3_steps_eval"]["logits"]) < TOL
    novel = GOLDEN["novel_eval_after_3_steps"]
    learner.set_classes(novel["classnames"])  # the frozen features and the class tokens follow the classes
    assert max_diff(learner.clip_class_features, [[0.0] * 512] * 3) > 0.01
    assert_summary(learner.clip_class_features, novel["frozen_text_features_normalised"], "novel frozen features")
    assert max_diff(eval_logits(learner, images), novel["logits_eval"]["logits"]) < TOL
