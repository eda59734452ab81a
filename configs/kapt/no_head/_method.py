# KAPT ablation: without the visual adaptation head (discrete + continuous prompts only).
from mmengine.config import read_base

with read_base():
    from .._method import *

model.learner.visual_head = False
