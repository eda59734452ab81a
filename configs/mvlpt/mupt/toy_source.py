# MVLPT source training, MUPT, on the toy world: one prompt learned on the union of three single-attribute
# toy tasks (toy-colours: 8 colours; toy-sizes: 20 size-shape pairs; toy-patterns: 40 pattern-shape pairs; 68
# classes), K shots of each class (4 here; the toy table uses 1, 2 and 4), tested on each task's own classes:
#   python tools/train.py configs/mvlpt/mupt/toy_source.py --work-dir work_dirs/mvlpt/mupt_toy_source
# The toy tasks draw their images from one world, so the same picture is "a red shape" in one task and "a striped
# circle" in another: a softmax over the 68 classes would fight itself. The official per-task mask
# (--multi-task-label_pertask: out-of-task logits multiplied by 0) is therefore on here; the 11-dataset recipe
# (source_coop11.py) keeps the official default, no mask. The shortened toy schedule: 50 epochs, the tiny CLIP.
from mmengine.config import read_base
from mmengine.dataset import DefaultSampler, default_collate

from vlprompt.datasets import MultitaskDataset
from vlprompt.engine import MultitaskAccuracyMetric, MultitaskModel

with read_base():
    from ._family import *
    from ..._base_.models.clip_toy import *  # after _family: its backbone wins

TOY_SOURCES = ["toy-colours", "toy-sizes", "toy-patterns"]
model.type = MultitaskModel
model.backbone = backbone
model.task_mask = "zero"
data_root = None  # the toy world is generated into $VLPROMPT_CACHE/toyworld on first use
train_dataloader = dict(
    batch_size=train_batch_size, num_workers=0, drop_last=True,
    sampler=dict(type=DefaultSampler, shuffle=True), collate_fn=dict(type=default_collate),
    dataset=dict(type=MultitaskDataset, tasks=TOY_SOURCES, split="train", num_shots=4, subsample="all"),
)
test_dataloader = dict(
    batch_size=200, num_workers=0,
    sampler=dict(type=DefaultSampler, shuffle=False), collate_fn=dict(type=default_collate),
    dataset=dict(type=MultitaskDataset, tasks=TOY_SOURCES, split="test", subsample="all"),
)
test_evaluator = dict(type=MultitaskAccuracyMetric)
protocol = dict(name="multitask-source", num_shots=4)
train_cfg.max_epochs = 50
