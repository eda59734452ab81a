# The 11 CoOp datasets (2,191 classes) joined into one multitask set, MVLPT's source
# (scripts/mvlpt/main_mt_coopdata_cut.sh): K shots of each class (5 here), concatenated and shuffled; tested on
# each task's own classes, accuracy/top1 the mean over tasks. The few-shot seed follows randomness.seed.
from mmengine.dataset import DefaultSampler, default_collate

from vlprompt.datasets import MultitaskDataset
from vlprompt.learners.mvlpt.model import MultitaskAccuracyMetric

COOP11 = ["imagenet", "caltech101", "food101", "stanford-cars", "oxford-pets", "oxford-flowers", "fgvc-aircraft",
          "sun397", "dtd", "eurosat", "ucf101"]
data_root = None  # None: $VLPROMPT_DATA; or --cfg-options data_root=/path
train_dataloader = dict(
    batch_size=32, num_workers=8, drop_last=True,
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
