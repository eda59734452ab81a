# MVLPT source training, MCoOp: one prompt on the union of the 11 CoOp datasets (2,191 classes), K shots of each
# class (5 here; the published scripts use 1, 5 and 20: set train_dataloader.dataset.num_shots), cross-entropy over
# the whole union (no per-task mask, the official default; model.task_mask="zero" is the official
# --multi-task-label_pertask). The text tower runs over all 2,191 class prompts at every step, so its blocks are
# activation-checkpointed (model.backbone.text_checkpointing: the same numbers in a fraction of the memory).
#   python tools/train.py configs/mvlpt/mcoop/source_coop11.py --work-dir work_dirs/mvlpt/mcoop_source \
#       --cfg-options data_root=/data
# then start any target from work_dirs/mvlpt/mcoop_source/learned.safetensors (configs/mvlpt/mcoop/<target>.py).
from mmengine.config import read_base

from vlprompt.learners.mvlpt.model import MultitaskModel

with read_base():
    from ..._base_.datasets.multitask_coop11 import *
    from ._family import *

model.type = MultitaskModel
model.task_mask = "none"
model.backbone.text_checkpointing = True
train_dataloader.batch_size = train_batch_size
