# The toy multitask family's sources joined into one set: toy-colours (8 colours), toy-sizes (20 size-shape pairs)
# and toy-patterns (40 pattern-shape pairs), 68 classes; K shots of each class (4 here), tested on each task's own
# classes. Its target is toy-shapes (toy_shapes_fewshot.py), whose classes compose what the sources name one at a time.
from mmengine.dataset import DefaultSampler, default_collate

from vlprompt.datasets import MultitaskDataset
from vlprompt.learners.mvlpt.model import MultitaskAccuracyMetric

TOY_SOURCES = ["toy-colours", "toy-sizes", "toy-patterns"]
data_root = None  # the toy world is generated into $VLPROMPT_CACHE/toyworld on first use
train_dataloader = dict(
    batch_size=32, num_workers=0, drop_last=True,
    sampler=dict(type=DefaultSampler, shuffle=True), collate_fn=dict(type=default_collate),
    dataset=dict(type=MultitaskDataset, tasks=TOY_SOURCES, split="train", num_shots=4, subsample="all"),
)
test_dataloader = dict(
    batch_size=200, num_workers=0,
    sampler=dict(type=DefaultSampler, shuffle=False), collate_fn=dict(type=default_collate),
    dataset=dict(type=MultitaskDataset, tasks=TOY_SOURCES, split="test", subsample="all"),
)
test_evaluator = dict(type=MultitaskAccuracyMetric)
protocol = dict(name="multitask-source", num_shots=4)
