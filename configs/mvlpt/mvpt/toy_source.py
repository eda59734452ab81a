# MVLPT source training, MVPT, on the toy world: one prompt on the union of the toy family's three
# single-attribute sources (_base_/datasets/multitask_toy.py: 68 classes), K shots of each class (4 here; the toy
# table uses 1, 2 and 4), tested on each task's own classes:
#   python tools/train.py configs/mvlpt/mvpt/toy_source.py --work-dir work_dirs/mvlpt/mvpt_toy_source
# The toy tasks draw their images from one world, so the same picture is "a red shape" in one task and "a striped
# circle" in another: a softmax over the 68 classes would fight itself. The official per-task mask
# (--multi-task-label_pertask: out-of-task logits multiplied by 0) is therefore on here; the 11-dataset recipe
# (source_coop11.py) keeps the official default, no mask. The shortened toy schedule: 50 epochs, the tiny CLIP.
from mmengine.config import read_base

from vlprompt.learners.mvlpt.model import MultitaskModel

with read_base():
    from ..._base_.datasets.multitask_toy import *
    from ._family import *
    from ..._base_.models.clip_toy import *  # after _family: its backbone wins

model.type = MultitaskModel
model.backbone = backbone
model.task_mask = "zero"
train_dataloader.batch_size = train_batch_size
train_cfg.max_epochs = 50
