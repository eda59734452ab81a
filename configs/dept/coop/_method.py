# DePT over CoOp (Koorye/DePT, ExtrasLinearProbeCoOp with vit_b16_ep10_bs4_lr35): CoOp's prompt branch plus the
# CAT head (docs/methods/dept.md). The official config gives CoOp 16 random context vectors (no phrase), batch 4,
# lr 0.0035 (the head 6.5 times that), 10 epochs, the same for every dataset.
from mmengine.config import read_base

with read_base():
    from ...coop._method import *

model.learner.update(type="dept_coop", n_ctx=16, ctx_init="", dept_weight=0.7)
optim_wrapper.optimizer.lr = 0.0035
optim_wrapper.paramwise_cfg = dict(custom_keys={"dept_head": dict(lr_mult=6.5)})
train_cfg.max_epochs = 10
train_batch_size = 4
train_dataloader.batch_size = train_batch_size
recipe = {}
