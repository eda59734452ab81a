# PCB's protocol on toy-shapes (40 classes, a pool of 1,600 images): the toy-hues recipe (10 epochs a round).
from mmengine.config import read_base

with read_base():
    from .toy_hues import *

train_dataloader.dataset.dataset.name = "toy-shapes"
test_dataloader.dataset.name = "toy-shapes"
