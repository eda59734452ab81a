from mmengine.config import read_base

with read_base():
    from .._base_.datasets.ucf101 import *
    from ._method import *

model.learner.templates = "a photo of a person doing {}."
