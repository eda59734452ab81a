# TPT on eurosat: AugMix views (TPT's fine-grained recipe).
from mmengine.config import read_base

with read_base():
    from ._method import *

test_dataloader.dataset.name = "eurosat"
