# KgCoOp, base-to-novel recipe (vit_b16_ep100_ctxv1, W 8.0): CoOp's 4 context vectors from "a photo of
# a" plus the knowledge-guided term towards the frozen hand-crafted prompt; batch 128, lr 0.002,
# 100 epochs. The dataset's KgCoOp template is set per dataset.
from mmengine.config import read_base

from vlprompt.engine import PromptModel

with read_base():
    from .._base_.default_runtime import *
    from .._base_.models.clip_vit_b16 import *
    from .._base_.schedules.sgd_warmup_cosine import *

model = dict(type=PromptModel, backbone=backbone,
             learner=dict(type="kgcoop", n_ctx=4, ctx_init="a photo of a", w=8.0, template="a photo of a {}."))
optim_wrapper.optimizer.lr = 0.002
train_cfg.max_epochs = 100
train_batch_size = 128
