from mmengine.config import read_base

with read_base():
    from .._base_.datasets.sun397 import *
    from ._method import *

model.learner.templates = "a photo of a {}."
