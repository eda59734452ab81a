# TPT on toy-shapes-noise with the toy CLIP.
# 32 views instead of 64 on the toy world (CPU-sized; int(32 x 0.1) = 3 views selected); AugMix as on
# every set outside the ImageNet family; the published step counts.
from mmengine.config import read_base

with read_base():
    from ._method import *
    from .._base_.models.clip_toy import *

model.backbone = backbone
test_dataloader.dataset.name = "toy-shapes-noise"
views.n_views = 32
# the random crops keep at least a quarter of the 64 px image (TPT's 0.08 cuts the object out of most small
# crops here); with torchvision's default TPT was 0.5 / -0.5 / -2.5 points from zero-shot on noise / night /
# sketch (README), with this range 0.5 / 0.5 / 0.0 (a chosen toy-world setting, not TPT's)
views.crop_scale = (0.25, 1.0)
