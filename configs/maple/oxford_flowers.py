from mmengine.config import read_base

with read_base():
    from .._base_.datasets.oxford_flowers import *
    from ._method import *

train_dataloader.batch_size = train_batch_size
