from mmengine.config import read_base

with read_base():
    from .base2novel import *

train_dataloader.dataset.name = "toy-hues"
test_dataloader.dataset.name = "toy-hues"
