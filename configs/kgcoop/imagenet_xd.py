# kgcoop, cross-dataset and domain-generalization source run: ImageNet, all 1000 classes, 16 shots, the
# method's recipe (tools/transfer.py tests the learned prompts on the targets).
from mmengine.config import read_base

with read_base():
    from .imagenet import *

train_dataloader.dataset.subsample = "all"
test_dataloader.dataset.subsample = "all"
protocol = dict(name="cross-dataset", num_shots=16)
