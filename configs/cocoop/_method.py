# CoCoOp, base-to-novel recipe (vit_b16_c4_ep10_batch1_ctxv1): 4 context vectors from "a photo of a"
# shifted per image by a Meta-Net, batch 1, SGD lr 0.002, 10 epochs.
from mmengine.config import read_base

from vlprompt.engine import PromptModel

with read_base():
    from .._base_.datasets.base2novel import *
    from .._base_.default_runtime import *
    from .._base_.models.clip_vit_b16 import *
    from .._base_.schedules.sgd_warmup_cosine import *

model = dict(type=PromptModel, backbone=backbone, learner=dict(type="cocoop", n_ctx=4, ctx_init="a photo of a"))
optim_wrapper.optimizer.lr = 0.002
train_cfg.max_epochs = 10
train_batch_size = 1
train_dataloader.batch_size = train_batch_size
recipe = dict(toy=dict(train_cfg=dict(max_epochs=5)))  # the tiny CLIP on the toy world: minutes on a CPU
