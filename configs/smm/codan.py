# SMM + CoOp on CODaN (Common Objects Day and Night, 10 classes) with CLIP ViT-B/16: train on the 10,000 day
# training images only, test on test_day (results.json) and on test_day and test_night (daynight.json), with the
# darkening picture darkening_grid.png next to them.
#   python tools/train.py configs/smm/codan.py            # data under $VLPROMPT_DATA/codan (datasets/README.md)
# Stage 1 as the official CODaN recipe (15 epochs over the training images, batch 16); stage 2 for 10 epochs of
# the CoOp schedule (the official ResNet-18 recipe trains the whole network for 90; the 4 context vectors here
# see 3,120 steps).
from mmengine.config import read_base
from mmengine.dataset import DefaultSampler, default_collate

from vlprompt.datasets import build_dataset
from vlprompt.daynight import DarkeningHook, DayNightReportHook
from vlprompt.engine import AccuracyMetric

with read_base():
    from ._common import *

data_root = None  # None: $VLPROMPT_DATA; or --cfg-options data_root=/path
train_dataloader = dict(
    batch_size=train_batch_size, num_workers=4, drop_last=True,
    sampler=dict(type=DefaultSampler, shuffle=True), collate_fn=dict(type=default_collate),
    dataset=dict(type=build_dataset, name="codan", split="train", num_shots=None, subsample="all"),  # all images
)
test_dataloader = dict(
    batch_size=100, num_workers=4,
    sampler=dict(type=DefaultSampler, shuffle=False), collate_fn=dict(type=default_collate),
    dataset=dict(type=build_dataset, name="codan", split="test", subsample="all"),
)
test_evaluator = dict(type=AccuracyMetric)
protocol = dict(name="day-night")
train_cfg.max_epochs = 10
custom_hooks = [
    dict(type=DarkeningHook),
    dict(type=DayNightReportHook, day=dict(name="codan", split="test"), night=dict(name="codan", split="test_night"),
         paired=False, batch_size=100),
]
