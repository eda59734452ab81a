# DePT over CoCoOp (Koorye/DePT, ExtrasLinearProbeCoCoOp with vit_b16_c4_ep10_batch1_ctxv1): CoCoOp's 4 context
# vectors from "a photo of a", batch 1, lr 0.002 (the head 6.5 times that), 10 epochs, every dataset.
from mmengine.config import read_base

with read_base():
    from ...cocoop._method import *

model.learner.update(type="dept_cocoop", dept_weight=0.7)
optim_wrapper.paramwise_cfg = dict(custom_keys={"dept_head": dict(lr_mult=6.5)})
recipe = {}
