# Tip-Adapter, training-free (gaopengcuhk/Tip-Adapter@d0e2d6f, main.py and configs/*.yaml): a cache of the
# few-shot images' features, each averaged over 10 passes of random crops (50-100% of the area) and flips, beside
# the zero-shot classifier (the dataset's template; the 7 selected templates on ImageNet), logits 100 x cosine.
# alpha and beta start at the dataset's init_alpha and 1 and are then searched on the validation split (all its
# images, the official grid and steps (200, 20) over the dataset's scales); ImageNet has no validation split:
# the official code searches on its test set, as vlprompt's ImageNet val split is. Nothing is trained (0 epochs).
# The official code is few-shot only (1/2/4/8/16 shots, the few_shot overlay); base-to-novel runs are vlprompt's
# extension: the cache holds the base classes, and novel classes get the zero-shot logits alone.
from mmengine.config import read_base
from mmengine.dataset import DefaultSampler, default_collate
from mmengine.optim import OptimWrapper
from torch.optim import AdamW

from vlprompt.datasets import build_dataset
from vlprompt.engine import PromptModel

with read_base():
    from .._base_.datasets.base2novel import *
    from .._base_.default_runtime import *
    from .._base_.models.clip_vit_b16 import *

model = dict(type=PromptModel, backbone=backbone,
             learner=dict(type="tip_adapter", templates="<dataset.template>", alpha=1.17, beta=1.0,
                          augment_epochs=10, search_scale=(7.0, 3.0), search_step=(200, 20), search=True,
                          select_epoch=True, logit_scale=100.0))
train_dataloader.batch_size = 256  # the official cache loader's
train_dataloader.drop_last = False
train_dataloader.dataset.crop_scale = (0.5, 1.0)
tune_dataloader = dict(
    batch_size=100, num_workers=2, sampler=dict(type=DefaultSampler, shuffle=False),
    collate_fn=dict(type=default_collate), dataset=dict(type=build_dataset, name="<dataset>", split="val"))
# an optimizer the runner asks for; with 0 epochs it never steps
optim_wrapper = dict(type=OptimWrapper, optimizer=dict(type=AdamW, lr=1e-3, eps=1e-4, weight_decay=0.01))
param_scheduler = None
train_cfg = dict(by_epoch=True, max_epochs=0)
val_cfg = None
test_cfg = dict()
default_hooks.checkpoint = dict(type=DurableCheckpointHook, interval=10**9, max_keep_ckpts=1, save_last=True)


def _published(scale_beta, scale_alpha, init_alpha, **learner):
    """A dataset's official configs/<name>.yaml: search_scale [beta, alpha] and init_alpha (init_beta is 1)."""
    return dict(model=dict(learner=dict(search_scale=(scale_beta, scale_alpha), alpha=init_alpha, **learner)))


recipe = {
    "toy": _published(7, 3, 1.17),
    "imagenet": _published(7, 3, 1.17, templates="imagenet-select"),
    "caltech101": _published(12, 5, 3),
    "dtd": _published(13, 13, 2),
    "eurosat": _published(12, 10, 2),
    "fgvc-aircraft": _published(30, 30, 5),
    "food101": _published(10, 10, 1.17),
    "oxford-flowers": _published(50, 50, 10),
    "oxford-pets": _published(7, 3, 1.17),
    "stanford-cars": _published(20, 10, 3),
    "sun397": _published(12, 10, 1.17),
    "ucf101": _published(7, 3, 3),
}
