# IVLP (independent vision-language prompting), the PromptSRC repository's baseline
# (IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml): 4 text tokens from "a photo of a" and 4 image tokens, deep
# prompts to depth 9 in each tower, no regularisers; batch 4, SGD lr 0.0025, 20 epochs.
from mmengine.config import read_base

from vlprompt.engine import PromptModel

with read_base():
    from .._base_.default_runtime import *
    from .._base_.models.clip_vit_b16 import *
    from .._base_.schedules.sgd_warmup_cosine import *

model = dict(type=PromptModel, backbone=backbone,
             learner=dict(type="ivlp", n_ctx_text=4, n_ctx_vision=4, ctx_init="a photo of a",
                          text_depth=9, vision_depth=9))
optim_wrapper.optimizer.lr = 0.0025
train_cfg.max_epochs = 20
train_batch_size = 4
