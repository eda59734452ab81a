# MaPLe, cross-dataset and domain-generalization source run (MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets):
# ImageNet, all 1000 classes, 16 shots; prompt depth 3, SGD lr 0.0026, 2 epochs. Test the learned prompts on
# the target datasets with tools/test.py (learned.safetensors holds the prompts and the backbone).
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.imagenet import *
    from ._method import *

train_dataloader.batch_size = train_batch_size
train_dataloader.dataset.subsample = "all"
test_dataloader.dataset.subsample = "all"
protocol = dict(name="cross-dataset", num_shots=16)
model.learner.depth = 3
optim_wrapper.optimizer.lr = 0.0026
train_cfg.max_epochs = 2
