# Base-to-novel protocol (CoCoOp): train on the base half of the classes with 16 shots per class,
# test on the base classes; the sweep tests the novel half as its own task. The dataset's few-shot
# seed follows randomness.seed, the image size follows the backbone (tools/train.py fills both in).
from mmengine.dataset import DefaultSampler, default_collate

from vlprompt.datasets import build_dataset
from vlprompt.engine import AccuracyMetric

data_root = None  # None: $VLPROMPT_DATA; or --cfg-options data_root=/path
train_dataloader = dict(
    batch_size=32, num_workers=2, drop_last=True,
    sampler=dict(type=DefaultSampler, shuffle=True), collate_fn=dict(type=default_collate),
    dataset=dict(type=build_dataset, name="<dataset>", split="train", num_shots=16, subsample="base"),
)
test_dataloader = dict(
    batch_size=100, num_workers=2,
    sampler=dict(type=DefaultSampler, shuffle=False), collate_fn=dict(type=default_collate),
    dataset=dict(type=build_dataset, name="<dataset>", split="test", subsample="base"),
)
test_evaluator = dict(type=AccuracyMetric)
protocol = dict(name="base2novel", num_shots=16)
