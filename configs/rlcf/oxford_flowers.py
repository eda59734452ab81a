# RLCF on oxford-flowers: AugMix views (TPT's fine-grained recipe);
# RLCF's fine-grained recipe (rlcf-prompt-fine.sh): 5 steps.
from mmengine.config import read_base

with read_base():
    from ._method import *

test_dataloader.dataset.name = "oxford-flowers"
adapter.steps = 5
