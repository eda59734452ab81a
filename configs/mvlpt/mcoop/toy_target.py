# MVLPT target adaptation, MCoOp, on the toy world: toy-shapes (40 colour-shape classes, whose attributes the
# toy sources name one at a time), K shots of every class (4 here; the toy table uses 1, 2 and 4), tested on all
# classes, starting from the toy source prompt:
#   python tools/train.py configs/mvlpt/mcoop/toy_target.py \
#       --cfg-options load_from=work_dirs/mvlpt/mcoop_toy_source/learned.safetensors
# Without load_from the prompt starts from its random init (the single-task baseline). 50 epochs, the tiny CLIP.
from mmengine.config import read_base

with read_base():
    from ..._base_.datasets.toy_shapes_fewshot import *
    from ._family import *
    from ..._base_.models.clip_toy import *  # after _family: its backbone wins

model.backbone = backbone
train_dataloader.batch_size = train_batch_size
train_cfg.max_epochs = 50
load_from = None  # the source prompt (a learned.safetensors)
