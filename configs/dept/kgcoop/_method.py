# DePT over KgCoOp (Koorye/DePT, ExtrasLinearProbeKgCoOp with vit_b16_ep10_ctxv1_bs4_lr35): KgCoOp's 4 context
# vectors from "a photo of a" with W 2.0 (not KgCoOp's 8.0), batch 4, lr 0.0035 (the head 6.5 times that), 10
# epochs, every dataset; the template is the dataset's as in KgCoOp (DePT's copy has KgCoOp's DTD line).
from mmengine.config import read_base

with read_base():
    from ...kgcoop._method import *

model.learner.update(type="dept_kgcoop", w=2.0, dept_weight=0.7)
optim_wrapper.optimizer.lr = 0.0035
optim_wrapper.paramwise_cfg = dict(custom_keys={"dept_head": dict(lr_mult=6.5)})
train_cfg.max_epochs = 10
train_batch_size = 4
train_dataloader.batch_size = train_batch_size
recipe = {"dtd": recipe["dtd"]}
