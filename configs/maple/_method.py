# MaPLe, base-to-novel recipe (MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml): 2 text tokens from the first two
# words of "a photo of a" ("of a" stays in the prompt), image prompts coupled to the text prompts by
# Linear(512 -> 768) layers, prompt depth 9 in both towers; batch 4, SGD lr 0.0035, 5 epochs.
from mmengine.config import read_base

from vlprompt.engine import PromptModel

with read_base():
    from .._base_.datasets.base2novel import *
    from .._base_.default_runtime import *
    from .._base_.models.clip_vit_b16 import *
    from .._base_.schedules.sgd_warmup_cosine import *

model = dict(type=PromptModel, backbone=backbone,
             learner=dict(type="maple", n_ctx=2, ctx_init="a photo of a", depth=9))
optim_wrapper.optimizer.lr = 0.0035
train_cfg.max_epochs = 5
train_batch_size = 4
train_dataloader.batch_size = train_batch_size
# ImageNet's cross-dataset and domain-generalization source run (imagenet_xd) follows
# MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets: prompt depth 3, SGD lr 0.0026, 2 epochs.
recipe = {
    "toy": dict(train_cfg=dict(max_epochs=5)),  # the tiny CLIP on the toy world: minutes on a CPU
    "imagenet+cross_dataset": dict(model=dict(learner=dict(depth=3)), optim_wrapper=dict(optimizer=dict(lr=0.0026)),
                                   train_cfg=dict(max_epochs=2)),
}
