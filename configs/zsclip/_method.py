# Zero-shot CLIP (CoOp's ZeroshotCLIP): one hand-written template per dataset, nothing trained.
from mmengine.config import read_base

from vlprompt.engine import PromptModel

with read_base():
    from .._base_.datasets.base2novel import *
    from .._base_.default_runtime import *
    from .._base_.models.clip_vit_b16 import *

model = dict(type=PromptModel, backbone=backbone, learner=dict(type="zsclip", templates="<dataset.template>"))
train_dataloader = None
