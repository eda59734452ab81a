# PCB's protocol on stanford_cars: the full train split as the pool (configs/active/_method.py).
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.active_pool import *
    from ._method import *

train_dataloader.dataset.dataset.name = "stanford-cars"
test_dataloader.dataset.name = "stanford-cars"
train_dataloader.batch_size = train_batch_size
