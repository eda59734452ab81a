from mmengine.config import read_base

with read_base():
    from .._base_.datasets.fgvc_aircraft import *
    from ._method import *

model.learner.templates = "a photo of a {}, a type of aircraft."
