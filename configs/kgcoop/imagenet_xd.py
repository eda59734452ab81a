# KgCoOp, cross-dataset and domain-generalization source run, as the official script
# (htyao89/KgCoOp, KgCoOp/scripts/xd_train.sh: SHOTS=4, all classes, vit_b16_ep100_ctxv1, W 8.0, 4 context
# vectors, CSC False, class token at the end): ImageNet, all 1000 classes, 4 shots, the method's recipe
# otherwise (tools/transfer.py tests the learned prompts on the targets).
from mmengine.config import read_base

with read_base():
    from .imagenet import *

train_dataloader.dataset.subsample = "all"
test_dataloader.dataset.subsample = "all"
train_dataloader.dataset.num_shots = 4
protocol = dict(name="cross-dataset", num_shots=4)
