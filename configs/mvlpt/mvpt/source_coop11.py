# MVLPT source training, MVPT: one prompt on the union of the 11 CoOp datasets (2,191 classes), K shots of each
# class (5 here; the published scripts use 1, 5 and 20: set train_dataloader.dataset.num_shots), as
# scripts/mvlpt/main_mt_coopdata_cut.sh: the datasets concatenated and shuffled, cross-entropy over the whole union
# (no per-task mask, the official default; model.task_mask="zero" is the official --multi-task-label_pertask),
# tested on each task's own classes (their mean is accuracy/top1). The text tower runs over all 2,191 class prompts
# at every step, so its blocks are activation-checkpointed (model.backbone.text_checkpointing; same numbers).
#   python tools/train.py configs/mvlpt/mvpt/source_coop11.py --work-dir work_dirs/mvlpt/mvpt_source \
#       --cfg-options data_root=/data
# then start any target from work_dirs/mvlpt/mvpt_source/learned.safetensors (configs/mvlpt/mvpt/<target>.py).
from mmengine.config import read_base
from mmengine.dataset import DefaultSampler, default_collate

from vlprompt.datasets import MultitaskDataset
from vlprompt.engine import MultitaskAccuracyMetric, MultitaskModel

with read_base():
    from ._family import *

COOP11 = ["imagenet", "caltech101", "food101", "stanford-cars", "oxford-pets", "oxford-flowers", "fgvc-aircraft",
          "sun397", "dtd", "eurosat", "ucf101"]
model.type = MultitaskModel
model.task_mask = "none"
model.backbone.text_checkpointing = True
data_root = None  # None: $VLPROMPT_DATA; or --cfg-options data_root=/path
train_dataloader = dict(
    batch_size=train_batch_size, num_workers=8, drop_last=True,
    sampler=dict(type=DefaultSampler, shuffle=True), collate_fn=dict(type=default_collate),
    dataset=dict(type=MultitaskDataset, tasks=COOP11, split="train", num_shots=5, subsample="all"),
)
test_dataloader = dict(
    batch_size=100, num_workers=8,
    sampler=dict(type=DefaultSampler, shuffle=False), collate_fn=dict(type=default_collate),
    dataset=dict(type=MultitaskDataset, tasks=COOP11, split="test", subsample="all"),
)
test_evaluator = dict(type=MultitaskAccuracyMetric)
protocol = dict(name="multitask-source", num_shots=5)
