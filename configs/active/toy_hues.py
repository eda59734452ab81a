# PCB's protocol on the toy world (toy-hues, 40 classes, a pool of 1,600 images) with the tiny CLIP: the
# published recipe with 10 epochs a round instead of 200, so that the toy table (8 rounds x 8 strategies x
# 3 seeds) runs in about an hour and a half on 2 CPU cores. (In one BADGE+PCB run on toy-hues, 50 epochs a round,
# as the toy CoOp configs, reached 51.5 % after round 7; 10 epochs reached 52.0 % after round 6, at a fifth of
# the cost.)
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.active_pool import *
    from ._method import *
    from .._base_.models.clip_toy import *  # after _method: its backbone wins

model.backbone = backbone
train_dataloader.dataset.dataset.name = "toy-hues"
test_dataloader.dataset.name = "toy-hues"
train_dataloader.batch_size = train_batch_size
train_dataloader.num_workers = 0
test_dataloader.num_workers = 0
train_cfg.max_epochs = 10
