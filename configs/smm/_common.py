# Similarity Min-Max (Luo et al., ICCV 2023) on CLIP, zero-shot day-night adaptation: no night image is seen.
# Stage 1 (DarkeningHook, before stage 2; skipped when <work_dir>/darkening.safetensors exists or
# model.darkening.path is given): the curve-estimator darkening module trained to minimise the cosine between the
# frozen CLIP image features of a day image and of its darkened version (weight 0.1), with the exposure (10),
# colour-constancy (25), loose TV (1600, margin 0.02) and flexibility (5) terms; Adam lr 1e-4, weight decay 1e-4,
# gradient clip 0.1, 15 epochs, batch 16, E ~ U(0, 0.5), lr x0.1 after 1/3 and 2/3 of the epochs (the official
# darken_classification.py). Stage 2 (DayNightModel): the prompt learner (CoOp from "a photo of a", the CoOp
# recipe's SGD schedule) trained with the cross-entropy of the day view and of its darkened view
# (E' ~ U(0, 0.2) + pixel and patch noise 0.025, colour jitter 0.3 on both) plus the BYOL-style similarity term
# (projector and predictor 128, EMA target 0.99, weight 0.1, symmetric). VPT, MaPLe or PromptSRC: replace
# model.learner. The ablation without the similarity term: --cfg-options model.similarity.weight=0.
from mmengine.config import read_base

from vlprompt.daynight import DarkeningHook, DayNightModel

with read_base():
    from .._base_.default_runtime import *
    from .._base_.models.clip_vit_b16 import *
    from .._base_.schedules.sgd_warmup_cosine import *

model = dict(
    type=DayNightModel, backbone=backbone,
    learner=dict(type="coop", n_ctx=4, ctx_init="a photo of a", class_token_position="end"),
    darkening=dict(path=None, file="darkening.safetensors", width=64, curve_rounds=8, min_scale=0.95,
                   epochs=15, batch_size=16, lr=1e-4, weight_decay=1e-4, grad_clip=0.1, exposure_range=(0.0, 0.5),
                   tv_margin=0.02,
                   weights=dict(similarity=0.1, exposure=10.0, colour=25.0, tv=1600.0, flexibility=5.0)),
    night_view=dict(exposure_range=(0.0, 0.2), noise=0.025, noise_mode="pixel_patch", patch=16, jitter=0.3, hue=0.3),
    similarity=dict(weight=0.1, momentum=0.99, dim=128, representation="auto"),
)
custom_hooks = [dict(type=DarkeningHook)]
optim_wrapper.optimizer.lr = 0.002
train_batch_size = 32
