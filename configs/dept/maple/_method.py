# DePT over MaPLe (Koorye/DePT, ExtrasLinearProbeMaPLe with vit_b16_c2_ep10_batch4_2ctx): MaPLe's 2 context
# vectors, depth 9, batch 4, lr 0.0035 (the head 6.5 times that), 10 epochs (MaPLe's own recipe has 5), every
# dataset, its ImageNet cross-dataset source run included.
from mmengine.config import read_base

with read_base():
    from ...maple._method import *

model.learner.update(type="dept_maple", dept_weight=0.7)
optim_wrapper.paramwise_cfg = dict(custom_keys={"dept_head": dict(lr_mult=6.5)})
train_cfg.max_epochs = 10
recipe = {}
