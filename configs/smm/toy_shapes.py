# SMM + CoOp on the toy world with the tiny toy CLIP: train on toy-shapes' day (photo) images only (16 shots,
# all 40 classes), test on toy-shapes (day) and toy-shapes-night (the same test scenes rendered at night).
#   python tools/train.py configs/smm/toy_shapes.py
# writes darkening.safetensors (stage 1), learned.safetensors (the CoOp prompts), results.json (day test),
# daynight.json (day and night top-1, the day/night feature gap, before and after; stage times) and
# darkening_grid.png (day images, their darkened versions, the same scenes at night) to the work dir.
from mmengine.config import read_base
from mmengine.dataset import DefaultSampler, default_collate

from vlprompt.datasets import build_dataset
from vlprompt.daynight import DarkeningHook, DayNightReportHook
from vlprompt.engine import AccuracyMetric

with read_base():
    from ._common import *
    from .._base_.models.clip_toy import *  # after _method: its backbone wins

model.backbone = backbone
data_root = None  # the toy world is generated into $VLPROMPT_CACHE/toyworld on first use
train_dataloader = dict(
    batch_size=train_batch_size, num_workers=0, drop_last=True,
    sampler=dict(type=DefaultSampler, shuffle=True), collate_fn=dict(type=default_collate),
    dataset=dict(type=build_dataset, name="toy-shapes", split="train", num_shots=16, subsample="all"),
)
test_dataloader = dict(
    batch_size=200, num_workers=0,
    sampler=dict(type=DefaultSampler, shuffle=False), collate_fn=dict(type=default_collate),
    dataset=dict(type=build_dataset, name="toy-shapes", split="test", subsample="all"),
)
test_evaluator = dict(type=AccuracyMetric)
protocol = dict(name="day-night", num_shots=16)
# CPU-sized (2 shared cores): a narrower darkening module (16 channels instead of 64) for 3 epochs at lr 1e-3
# (120 steps; the CODaN recipe takes 9,375 at 1e-4), and stage 2 for 15 epochs (300 steps, 1 warm-up epoch) of the
# CoOp schedule (SGD lr 0.002).
model.darkening.update(width=16, epochs=3, lr=1e-3)
model.night_view.hue = 0.0  # toy classes are colour-shape pairs: a hue shift would change the label
train_cfg.max_epochs = 15
custom_hooks = [
    dict(type=DarkeningHook),
    dict(type=DayNightReportHook, day=dict(name="toy-shapes", split="test"),
         night=dict(name="toy-shapes-night", split="test"), paired=True, batch_size=200),
]
