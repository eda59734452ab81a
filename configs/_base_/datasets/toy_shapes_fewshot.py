# toy-shapes as a few-shot target: K shots of every class (4 here), tested on all 40 classes.
from mmengine.config import read_base

with read_base():
    from .base2novel import *

train_dataloader.dataset.name = "toy-shapes"
test_dataloader.dataset.name = "toy-shapes"
train_dataloader.num_workers = 0
train_dataloader.dataset.subsample = "all"
train_dataloader.dataset.num_shots = 4
test_dataloader.num_workers = 0
test_dataloader.dataset.subsample = "all"
protocol = dict(name="few-shot", num_shots=4)
