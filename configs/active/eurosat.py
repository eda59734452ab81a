# PCB's protocol on eurosat: the full train split as the pool (configs/active/_method.py).
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.active_pool import *
    from ._method import *

train_dataloader.dataset.dataset.name = "eurosat"
test_dataloader.dataset.name = "eurosat"
train_dataloader.batch_size = train_batch_size
