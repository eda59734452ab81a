# The baseline of the SMM toy table: plain CoOp trained on toy-shapes' day images with the same data, epochs and
# schedule as configs/smm/toy_shapes.py (no darkening, no night view, no similarity term), and the same day/night
# report (daynight.json).
from mmengine.config import read_base

from vlprompt.daynight import DayNightReportHook
from vlprompt.engine import PromptModel

with read_base():
    from ..toy_shapes import *

model = dict(type=PromptModel, backbone=backbone, learner=model["learner"])
custom_hooks = [
    dict(type=DayNightReportHook, day=dict(name="toy-shapes", split="test"),
         night=dict(name="toy-shapes-night", split="test"), paired=True, batch_size=200, picture=0),
]
