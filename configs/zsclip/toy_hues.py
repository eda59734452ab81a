from mmengine.config import read_base

with read_base():
    from .._base_.datasets.toy_hues import *
    from ._method import *
    from .._base_.models.clip_toy import *

model.backbone = backbone
test_dataloader.num_workers = 0
