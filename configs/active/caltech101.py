# PCB's protocol on caltech101: the full train split as the pool (configs/active/_method.py).
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.active_pool import *
    from ._method import *

train_dataloader.dataset.dataset.name = "caltech101"
test_dataloader.dataset.name = "caltech101"
train_dataloader.batch_size = train_batch_size
