# KAPT ablation: without the discrete knowledge prompt (learned context + visual head + consistency with the
# plain "a photo of a {class}." prompt).
from mmengine.config import read_base

with read_base():
    from .._method import *

model.learner.knowledge = None
