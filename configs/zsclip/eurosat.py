from mmengine.config import read_base

with read_base():
    from .._base_.datasets.eurosat import *
    from ._method import *

model.learner.templates = "a centered satellite photo of {}."
