# MCoOp: 16 generic context vectors from N(0, 0.02^2), the class name in the middle (scripts/mvlpt/*.sh).
from mmengine.config import read_base

with read_base():
    from .._common import *

model.learner = dict(type="mcoop", n_ctx=16, ctx_init="", class_token_position="middle")
