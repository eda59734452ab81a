# RLCF on toy-hues with the toy CLIP;
# the reward CLIP is the toy world's teacher: the toy architecture with its own weights
# (vlprompt/weights/toy_teacher.safetensors, made by tools/pretrain_toy_clip.py --recipe toy-teacher).
# 32 views instead of 64 on the toy world (CPU-sized; int(32 x 0.1) = 3 views selected); AugMix as on
# every set outside the ImageNet family; the published step counts.
from mmengine.config import read_base

with read_base():
    from ._method import *
    from .._base_.models.clip_toy import *

model.backbone = backbone
test_dataloader.dataset.name = "toy-hues"
views.n_views = 32
adapter.teacher = dict(name="toy", pretrained="toy-teacher")
