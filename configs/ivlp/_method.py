# IVLP (independent vision-language prompting), the PromptSRC repository's baseline
# (IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml): 4 text tokens from "a photo of a" and 4 image tokens, deep
# prompts to depth 9 in each tower, no regularisers; batch 4, SGD lr 0.0025, 20 epochs.
from mmengine.config import read_base

from vlprompt.engine import PromptModel

with read_base():
    from .._base_.datasets.base2novel import *
    from .._base_.default_runtime import *
    from .._base_.models.clip_vit_b16 import *
    from .._base_.schedules.sgd_warmup_cosine import *

model = dict(type=PromptModel, backbone=backbone,
             learner=dict(type="ivlp", n_ctx_text=4, n_ctx_vision=4, ctx_init="a photo of a",
                          text_depth=9, vision_depth=9))
optim_wrapper.optimizer.lr = 0.0025
train_cfg.max_epochs = 20
train_batch_size = 4
train_dataloader.batch_size = train_batch_size
# ImageNet's cross-dataset and domain-generalization source run (imagenet_xd) follows the only published IVLP
# cross-dataset script (muzairkhattak/multimodal-prompt-learning, scripts/independent-vlp/xd_train_ivlp.sh with
# configs/trainers/IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml): 2 + 2 tokens, depth 12 / 12, SGD lr 0.0035, 5 epochs.
recipe = {
    "toy": dict(train_cfg=dict(max_epochs=8)),  # the tiny CLIP on the toy world: minutes on a CPU
    "imagenet+cross_dataset": dict(model=dict(learner=dict(n_ctx_text=2, n_ctx_vision=2, text_depth=12,
                                                           vision_depth=12)),
                                   optim_wrapper=dict(optimizer=dict(lr=0.0035)), train_cfg=dict(max_epochs=5)),
}
