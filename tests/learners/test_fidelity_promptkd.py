"""PromptKD against numbers from its official code (zhengli97/PromptKD@0277236, fp32, CPU).

``tests/golden/official_promptkd.json`` holds what the official ``PromptKD`` trainer computed (its NOTE says how)
for a seeded random ViT-B/16 student and a seeded random ViT-L/14 teacher whose PromptSRC prompts were set from a
seeded generator (the "teacher_manifest"), 4 seeded random images and 7 class names as the split files spell them,
with the student's prompts and projector set from a seeded generator (its BatchNorm affine at the official 1/0).
Here the same values go into a vlprompt ``promptsrc`` teacher on the same ViT-L/14 and a ``promptkd`` student: the
teacher's text features and logits, the student's logits in eval and train mode (BatchNorm statistics), the loss,
every gradient of the first step, the parameters and BatchNorm statistics after 3 SGD steps under the config's
optimiser, and the base and novel logits after them.

The whole file takes about a minute on 2 CPU cores (a ViT-L/14 teacher), so it is marked slow.
"""

import json
import re

import pytest
import torch
from helpers import GOLDEN_DIR
from mmengine.optim import build_optim_wrapper
from seeded_models import assert_summary, max_diff, seeded_clip, seeded_images
from test_fidelity import our_name as promptsrc_name

from vlprompt.engine import load_config
from vlprompt.learners import PromptKD, PromptSRC

pytestmark = pytest.mark.slow
GOLDEN = json.loads((GOLDEN_DIR / "official_promptkd.json").read_text())
TOL = 1e-4  # logits and losses, max abs difference (observed: see the closing note of the change)
# After 3 steps at KD weight 1000 on random weights (the loss rises from 4 to 124) the student's logits reach about
# 4 and rounding is amplified: the official code itself moves them by 6.8e-5 between 1 and 2 CPU threads; vlprompt
# is within 3.5e-5 relative (1.3e-4 absolute) of it. Everything before the third step is within TOL.
TOL_AFTER = 2e-4
PROJECTOR = {"0": "linear1", "1": "norm", "3": "linear2"}


def our_name(official: str) -> str:
    """vlprompt's name of an official student parameter."""
    if match := re.fullmatch(r"VPT_image_trans\.conv1\.(\d)\.(weight|bias)", official):
        return f"projector.{PROJECTOR[match[1]]}.{match[2]}"
    if official == "image_encoder.VPT":
        return "vision_ctx"
    match = re.fullmatch(r"image_encoder\.transformer\.resblocks\.(\d+)\.VPT_shallow", official)
    assert match, official
    return f"vision_deep.{match[1]}"


def seeded(shape, entry) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(entry["seed"])) * entry["scale"]


@pytest.fixture(scope="module")
def setup():
    names = GOLDEN["classnames"]
    weights = GOLDEN["weights"]
    teacher = PromptSRC(seeded_clip("ViT-L-14", weights["teacher"]["seed"], weights["teacher"]["float_sum"]), names,
                        n_ctx_text=4, n_ctx_vision=4, ctx_init="a photo of a", text_depth=9, vision_depth=9)
    params = dict(teacher.named_parameters())
    with torch.no_grad():
        for entry in GOLDEN["teacher_manifest"]:
            p = params[promptsrc_name("promptsrc", entry["name"])]
            p.copy_(seeded(entry["shape"], entry).reshape(p.shape))
    cfg = load_config("configs/promptkd/caltech101.py")
    settings = {k: v for k, v in cfg.model.learner.items() if k not in ("type", "teacher")}
    student = PromptKD(seeded_clip("ViT-B-16", weights["student"]["seed"], weights["student"]["float_sum"]), names,
                       teacher=teacher, **settings)
    params = dict(student.named_parameters())
    assert set(params) == {our_name(e["name"]) for e in GOLDEN["manifest"]}
    with torch.no_grad():
        for entry in GOLDEN["manifest"]:
            p = params[our_name(entry["name"])]
            assert p.numel() == torch.Size(entry["shape"]).numel(), entry["name"]
            if entry["seed"] is not None:  # the BatchNorm affine keeps its official init
                p.copy_(seeded(entry["shape"], entry).reshape(p.shape))
    images = seeded_images(GOLDEN["images"]["sum"])
    return student, images, torch.tensor(GOLDEN["labels"]), cfg


def test_the_teachers_text_features_and_logits_match(setup):
    student, images, _, _ = setup
    ref = GOLDEN["teacher"]
    assert max_diff(student.teacher_class_features, ref["text_features_full"]) < 1e-5
    assert max_diff(student.teacher_logits(images), ref["logits"]) < TOL


def test_the_students_eval_logits_over_all_base_and_novel_classes_match(setup):
    student, images, _, _ = setup
    student.eval()
    with torch.no_grad():
        assert max_diff(student(images), GOLDEN["logits_init_eval"]) < TOL


def test_three_sgd_steps_under_the_configs_recipe_match_the_official_trainer(setup):
    student, images, labels, cfg = setup
    wrapper = build_optim_wrapper(student, cfg.optim_wrapper)
    group = wrapper.optimizer.param_groups[0]
    official = GOLDEN["optimizer"]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == \
        (official["lr"], official["momentum"], official["weight_decay"])
    params = dict(student.named_parameters())
    student.train()
    for step, ref in enumerate(GOLDEN["steps"]):
        if step == 0:  # the student's train-mode logits: BatchNorm on the batch's statistics
            stats = {k: v.clone() for k, v in student.projector.norm.state_dict().items()}
            with torch.no_grad():
                train_logits = student.logits(student.encode_images(images), student.teacher_class_features)
            student.projector.norm.load_state_dict(stats)  # that forward counted once in the running statistics
            assert max_diff(train_logits, GOLDEN["logits_init_train"]) < TOL
        terms = student.loss(images, torch.full_like(labels, -1))  # the labels are never read
        assert set(terms) == {"loss_kd"}
        assert abs(terms["loss_kd"].item() - ref["loss"]) < TOL * max(1.0, abs(ref["loss"])), f"step {step + 1}"
        wrapper.zero_grad()
        terms["loss_kd"].backward()
        if step == 0:
            for name, summary in GOLDEN["grads_step1"].items():
                if name == "VPT_image_trans.conv1.0.bias":  # zero before a train-mode BatchNorm: float noise there
                    assert params[our_name(name)].grad.abs().max() < 1e-4  # the weight gradients are ~1e-2
                    continue
                grad = params[our_name(name)].grad.reshape(summary["shape"])  # Linear for the 1x1 convolution
                assert_summary(grad, summary, f"gradient of {name}", atol=1e-5, rtol=1e-3)
        wrapper.step()
    for name, summary in GOLDEN["params_after_3_steps"].items():
        p = params[our_name(name)].reshape(summary["shape"])
        assert_summary(p, summary, f"{name} after 3 steps", atol=1e-6, rtol=1e-4)
    norm = student.projector.norm
    for key in ("running_mean", "running_var"):
        assert_summary(getattr(norm, key), GOLDEN["bn_buffers_after_3_steps"][key], f"BatchNorm {key}")
    assert norm.num_batches_tracked.item() == GOLDEN["bn_buffers_after_3_steps"]["num_batches_tracked"]
    student.eval()
    with torch.no_grad():
        assert max_diff(student(images), GOLDEN["logits_after_3_steps_eval"]) < TOL_AFTER
        base = GOLDEN["eval_after_3_steps"]["base_val_split"]
        student.set_classes(GOLDEN["classnames"][: len(base[0])])  # the base half, as its own task
        assert max_diff(student(images), base) < TOL_AFTER
        student.set_classes(GOLDEN["classnames"][len(base[0]):])
        assert max_diff(student(images), GOLDEN["eval_after_3_steps"]["novel_test_split"]) < TOL_AFTER
