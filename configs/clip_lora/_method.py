# CLIP-LoRA, the published recipe (MaxZanella/CLIP-LoRA@358f0d7, main.py, lora.py and run_utils.py defaults):
# rank-2 updates of q, k, v in every block of both towers, alpha 1 (scaled by alpha / sqrt(r)), dropout 0.25 on
# the updates' input; AdamW lr 2e-4, weight decay 1e-2, eps 1e-8; cosine annealing over the whole run to 1e-6,
# stepped every iteration, no warm-up; 500 iterations per shot a class (8000 at 16 shots), batch 32; the class
# prompt "a photo of a {}." on every dataset (the official code's only active template) and logits 100 x cosine;
# no validation, the last iterate is tested. The official code is few-shot only (1/2/4/8/16 shots, the few_shot
# overlay); it has no base-to-novel protocol (maintainer, MaxZanella/CLIP-LoRA#15). Base-to-novel runs of this
# config are vlprompt's extension: the same recipe on 16 shots of the base classes.
from mmengine.config import read_base
from mmengine.optim import CosineAnnealingLR, OptimWrapper
from torch.optim import AdamW

from vlprompt.engine import PromptModel

with read_base():
    from .._base_.datasets.base2novel import *
    from .._base_.default_runtime import *
    from .._base_.models.clip_vit_b16 import *

model = dict(type=PromptModel, backbone=backbone,
             learner=dict(type="clip_lora", rank=2, alpha=1.0, dropout=0.25, towers=["text", "image"],
                          position="all", projections=["q", "k", "v"], template="a photo of a {}.",
                          logit_scale=100.0))
optim_wrapper = dict(type=OptimWrapper, optimizer=dict(type=AdamW, lr=2e-4, weight_decay=1e-2, betas=(0.9, 0.999),
                                                                eps=1e-8))
param_scheduler = dict(type=CosineAnnealingLR, eta_min=1e-6, by_epoch=False)
train_cfg = dict(by_epoch=False, iters_per_shot=500, val_interval=10**9)
val_cfg = None
test_cfg = dict()
train_batch_size = 32
train_dataloader.batch_size = train_batch_size
train_dataloader.drop_last = False  # the official loader keeps the last, partial batch of an epoch
default_hooks.checkpoint = dict(type=DurableCheckpointHook, by_epoch=False, interval=10**9, max_keep_ckpts=1,
                                save_last=True)
log_processor = dict(by_epoch=False, window_size=10)
recipe = dict(
    toy=dict(train_cfg=dict(iters_per_shot=10), optim_wrapper=dict(optimizer=dict(lr=2e-3))),  # minutes on a CPU
)
