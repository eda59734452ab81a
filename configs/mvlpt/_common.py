# MVLPT (Shen et al., WACV 2024), the published recipe (configs/trainers/MVLPT/vit_b16.yaml, shared by the
# source and the target runs): CLIP ViT-B/16, SGD lr 0.002 (momentum 0.9, weight decay 5e-4), cosine over 200
# epochs after one warm-up epoch at a constant 1e-5, batch 32, CoOp's augmentation (random resized crop, flip).
# Each family's _family.py sets the learner. The official code tests the epoch with the best validation
# accuracy (TEST.FINAL_MODEL best_val); these configs test the last epoch, as every other vlprompt recipe.
from mmengine.config import read_base

from vlprompt.engine import PromptModel

with read_base():
    from .._base_.default_runtime import *
    from .._base_.models.clip_vit_b16 import *
    from .._base_.schedules.sgd_warmup_cosine import *

model = dict(type=PromptModel, backbone=backbone, learner=None)
optim_wrapper.optimizer.lr = 0.002
train_cfg.max_epochs = 200
train_batch_size = 32
