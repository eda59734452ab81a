# TPT on imagenet-r over its 200 classes (the reader lists only them):
# crops and flips only (TPT's ImageNet-family views).
from mmengine.config import read_base

with read_base():
    from ._method import *

test_dataloader.dataset.name = "imagenet-r"
