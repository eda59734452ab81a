# MUPT: 4 text and 4 deep visual tokens coupled through a shared 128-d space and a 1-layer, 1-head transformer
# block, reproduced as the official code computes it (token_mixing=False: each token attends only to itself;
# True is the labelled deviation in which the tokens attend to each other).
from mmengine.config import read_base

with read_base():
    from .._common import *

model.learner = dict(type="mupt", n_ctx_text=4, n_ctx_vision=4, depth=12, project_dim=128, token_mixing=False,
                     class_token_position="middle")
