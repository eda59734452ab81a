"""CLIP-LoRA against numbers from its official code (MaxZanella/CLIP-LoRA@358f0d7, fp32, CPU).

``tests/golden/official_clip_lora.json`` holds what the official ``apply_lora`` and ``run_lora`` computed (its NOTE
says how) for the seeded random ViT-B/16, 4 seeded random images and 7 class names as the split files spell them,
with every LoRA ``A`` and ``B`` set from a seeded generator (the "manifest") and dropout 0 on the published code
path. Here the same values go into vlprompt's adapters (mapped by name) and the class prompts, the logits before
and after training, the loss and every gradient of the first step, and the adapters after 3 AdamW steps under the
configs' optimiser and schedule must agree.
"""

import json
import re

import pytest
import torch
from helpers import GOLDEN_DIR
from mmengine.config import Config
from mmengine.optim import CosineAnnealingLR
from seeded_models import assert_summary, max_diff, seeded_images, seeded_vitb16

from vlprompt.learners import CLIPLoRA

GOLDEN = json.loads((GOLDEN_DIR / "official_clip_lora.json").read_text())
TOL = 1e-4  # logits and losses, max abs difference (observed: see the closing note of the change)


def our_name(official: str) -> str:
    """vlprompt's name of an official LoRA parameter: ``[visual.]transformer.resblocks.{i}.attn.{q,k,v}_proj.
    w_lora_{A,B}`` -> ``adapters.{image,text}.{i}.{q,k,v}.{down,up}``."""
    match = re.fullmatch(r"(visual\.)?transformer\.resblocks\.(\d+)\.attn\.([qkv])_proj\.w_lora_([AB])", official)
    assert match, official
    tower = "image" if match[1] else "text"
    return f"adapters.{tower}.{match[2]}.{match[3]}.{'down' if match[4] == 'A' else 'up'}"


@pytest.fixture(scope="module")
def setup():
    clip = seeded_vitb16(0, GOLDEN["weights"]["float_sum"])
    images = seeded_images(GOLDEN["images"]["sum"])
    lora = GOLDEN["lora"]
    learner = CLIPLoRA(clip, GOLDEN["classnames"], rank=lora["r"], alpha=lora["alpha"], dropout=lora["dropout_used"],
                       position=lora["position"], projections=lora["params"], template=GOLDEN["template"],
                       logit_scale=GOLDEN["train_logit_scale"])
    params = dict(learner.named_parameters())
    with torch.no_grad():
        for entry in GOLDEN["manifest"]:
            p = params[our_name(entry["name"])]
            assert list(p.shape) == entry["shape"], entry["name"]
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(entry["seed"])) * 0.1)
    return learner, images, torch.tensor(GOLDEN["labels"])


def cosine(learner: CLIPLoRA, images: torch.Tensor) -> torch.Tensor:
    learner.eval()
    with torch.no_grad():
        return learner(images) / learner.logit_scale


def test_adapters_map_one_to_one_with_the_official_ones(setup):
    learner, _, _ = setup
    assert learner.alpha / learner.rank**0.5 == pytest.approx(GOLDEN["lora"]["scaling"][0])
    ours = {k: list(v.shape) for k, v in learner.learned_state_dict().items()}
    assert ours == {our_name(e["name"]): e["shape"] for e in GOLDEN["manifest"]}
    tokens = [[t for t in row if t] for row in learner.class_token_ids.tolist()]
    assert tokens == GOLDEN["tokenized_prompts"]  # "a photo of a sea lion." for sea_lion, as the official code


def test_logits_with_the_seeded_adapters_match(setup):
    learner, images, _ = setup
    assert max_diff(cosine(learner, images), GOLDEN["logits_init_eval"]["cosine"]) < TOL / 100


@pytest.mark.slow  # 3 training steps of both ViT-B/16 towers (7 s on 2 quiet cores)
def test_three_adamw_steps_under_the_configs_recipe_match_the_official_trainer(setup):
    learner, images, labels = setup
    recipe = Config.fromfile(str(GOLDEN_DIR.parent.parent / "configs" / "clip_lora" / "_method.py"))
    optim = dict(recipe.optim_wrapper.optimizer)
    assert {k: optim[k] for k in ("lr", "weight_decay")} == {k: GOLDEN["optimizer"][k] for k in ("lr", "weight_decay")}
    assert tuple(optim["betas"]) == tuple(GOLDEN["optimizer"]["betas"])
    params = dict(learner.named_parameters())
    optimizer = torch.optim.AdamW(list(params.values()), lr=optim["lr"], weight_decay=optim["weight_decay"],
                                  betas=tuple(optim["betas"]))
    assert optimizer.defaults["eps"] == GOLDEN["optimizer"]["eps"]
    schedule = GOLDEN["scheduler"]
    assert recipe.param_scheduler.eta_min == schedule["eta_min"]
    assert recipe.train_cfg.iters_per_shot * GOLDEN["official_args"]["shots"] == schedule["T_max"]
    scheduler = CosineAnnealingLR(optimizer, eta_min=recipe.param_scheduler.eta_min, by_epoch=False,
                                  end=schedule["T_max"])
    learner.train()
    for step, (loss, lr) in enumerate(zip(GOLDEN["losses"], GOLDEN["lrs"], strict=True)):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr, rel=1e-9)
        terms = learner.loss(images, labels)
        assert set(terms) == {"loss_ce"}
        assert abs(terms["loss_ce"].item() - loss) < TOL, f"loss before step {step + 1}"
        optimizer.zero_grad()
        terms["loss_ce"].backward()
        if step == 0:
            for official, ref in GOLDEN["grads_step1"].items():
                assert_summary(params[our_name(official)].grad, ref, f"gradient of {official}", atol=1e-6, rtol=1e-3)
        optimizer.step()
        scheduler.step()
    for official, ref in GOLDEN["params_after_3_steps"].items():
        assert_summary(params[our_name(official)], ref, f"{official} after 3 steps", atol=1e-6, rtol=1e-5)
    assert max_diff(cosine(learner, images), GOLDEN["logits_after_3_steps_eval"]["cosine"]) < TOL / 100
