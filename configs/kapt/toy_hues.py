# KAPT (reimplemented from the paper) on the toy world with the tiny CLIP: CoOp's recipe shortened to 50
# epochs for a CPU, as every toy config; the descriptions are the toy world's own knowledge.json.
# branches and kc_target (configs/kapt/_method.py) were chosen on toy-hues' and toy-shapes' val split (seed 1),
# never their test split: see the KAPT section of the README.
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.toy_hues import *
    from ._method import *
    from .._base_.models.clip_toy import *

model.backbone = backbone
model.learner.knowledge = dict(dataset="toy-hues")
train_dataloader.batch_size = train_batch_size
train_dataloader.num_workers = 0
test_dataloader.num_workers = 0
train_cfg.max_epochs = 50
