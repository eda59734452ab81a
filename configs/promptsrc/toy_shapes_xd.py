# promptsrc, source run of the toy domain-generalization protocol: toy-shapes, all 40 classes, 16 shots
# (tools/transfer.py --protocol toy-domain-generalization tests it on the sketch, night, noise domains).
from mmengine.config import read_base

with read_base():
    from .toy_shapes import *

train_dataloader.dataset.subsample = "all"
test_dataloader.dataset.subsample = "all"
protocol = dict(name="toy-domain-generalization", num_shots=16)
