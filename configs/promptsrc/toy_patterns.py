# PromptSRC on the toy world with the tiny CLIP:
# the published recipe shortened to 8 epochs (GPA mean 6, std 1) to run in minutes on a CPU.
from mmengine.config import read_base

from vlprompt.learners.promptsrc.gpa import GaussianPromptAggregation

with read_base():
    from .._base_.datasets.toy_patterns import *
    from ._method import *
    from .._base_.models.clip_toy import *

model.backbone = backbone
train_dataloader.batch_size = train_batch_size
train_dataloader.num_workers = 0
test_dataloader.num_workers = 0
train_cfg.max_epochs = 8
custom_hooks = [dict(type=GaussianPromptAggregation, mean=6, std=1)]
