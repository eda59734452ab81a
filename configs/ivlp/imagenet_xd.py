# IVLP, cross-dataset and domain-generalization source run: ImageNet, all 1000 classes, 16 shots. No
# published IVLP recipe exists for this setting; this one mirrors PromptSRC's (prompt depth 3 / 3, lr 0.0025,
# 20 epochs) without its regularisers. Test the learned prompts on the targets with tools/test.py.
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.imagenet import *
    from ._method import *

train_dataloader.batch_size = train_batch_size
train_dataloader.dataset.subsample = "all"
test_dataloader.dataset.subsample = "all"
protocol = dict(name="cross-dataset", num_shots=16)
model.learner.text_depth = 3
model.learner.vision_depth = 3
