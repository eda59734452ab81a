# VPT-deep on CLIP, the MaPLe repository's deep vision prompting ablation (VPT/vit_b16_c2_ep5_batch4_4.yaml):
# 8 learned image tokens in all 12 layers, the frozen text features of "a photo of a {}." as the
# classifier; batch 4, SGD lr 0.0025, 5 epochs.
from mmengine.config import read_base

from vlprompt.engine import PromptModel

with read_base():
    from .._base_.datasets.base2novel import *
    from .._base_.default_runtime import *
    from .._base_.models.clip_vit_b16 import *
    from .._base_.schedules.sgd_warmup_cosine import *

model = dict(type=PromptModel, backbone=backbone,
             learner=dict(type="vpt", n_ctx=8, depth=12, template="a photo of a {}."))
optim_wrapper.optimizer.lr = 0.0025
train_cfg.max_epochs = 5
train_batch_size = 4
train_dataloader.batch_size = train_batch_size
recipe = dict(toy=dict(train_cfg=dict(max_epochs=5)))  # the tiny CLIP on the toy world: minutes on a CPU
