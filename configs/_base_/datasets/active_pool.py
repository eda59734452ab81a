# Active learning (PCB): the whole train split of a dataset is the unlabelled pool; each round trains on
# its labelled part (LabelledSubset; tools/active.py sets the indices, None = every image: the fully
# labelled reference) and tests on the whole test split, all classes.
from mmengine.dataset import DefaultSampler, default_collate

from vlprompt.datasets import LabelledSubset, build_dataset
from vlprompt.engine import AccuracyMetric

data_root = None  # None: $VLPROMPT_DATA; or --cfg-options data_root=/path
train_dataloader = dict(
    batch_size=32, num_workers=2, drop_last=True,
    sampler=dict(type=DefaultSampler, shuffle=True), collate_fn=dict(type=default_collate),
    dataset=dict(type=LabelledSubset, indices=None,
                 dataset=dict(type=build_dataset, name="<dataset>", split="train", subsample="all")),
)
test_dataloader = dict(
    batch_size=100, num_workers=2,
    sampler=dict(type=DefaultSampler, shuffle=False), collate_fn=dict(type=default_collate),
    dataset=dict(type=build_dataset, name="<dataset>", split="test", subsample="all"),
)
test_evaluator = dict(type=AccuracyMetric)
protocol = dict(name="active")
