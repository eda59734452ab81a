# CoOp, base-to-novel recipe (KaiyangZhou/CoOp scripts/cocoop/base2new_train.sh with TRAINER=CoOp, CFG
# vit_b16_ctxv1; vit_b16_ep50_ctxv1 for ImageNet): 4 context vectors from "a photo of a",
# class token at the end, batch 32, SGD lr 0.002, 200 epochs (50 for ImageNet).
from mmengine.config import read_base

from vlprompt.engine import PromptModel

with read_base():
    from .._base_.datasets.base2novel import *
    from .._base_.default_runtime import *
    from .._base_.models.clip_vit_b16 import *
    from .._base_.schedules.sgd_warmup_cosine import *

model = dict(type=PromptModel, backbone=backbone,
             learner=dict(type="coop", n_ctx=4, ctx_init="a photo of a", class_token_position="end"))
optim_wrapper.optimizer.lr = 0.002
train_cfg.max_epochs = 200
train_batch_size = 32
train_dataloader.batch_size = train_batch_size
recipe = dict(
    imagenet=dict(train_cfg=dict(max_epochs=50)),
    toy=dict(train_cfg=dict(max_epochs=50)),  # the tiny CLIP on the toy world: minutes on a CPU
)
