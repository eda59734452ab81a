# MVPT: 16 deep visual prompt tokens in every layer of the image tower (VPT-deep, uniform init), the frozen
# "a photo of a {class}." prompts on the text side (scripts/mvlpt/*.sh, VPT.N_CTX 16, COOP.N_CTX 0).
from mmengine.config import read_base

with read_base():
    from .._common import *

model.learner = dict(type="mvpt", n_ctx=16, depth=12)
