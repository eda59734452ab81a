# GRAM meta-training (reimplemented from the paper: no official code) of CoOp's prompt initialisation and
# gradient regulator on the toy world's unlabelled caption pool, for configs/gram/coop/. The learner and
# backbone are read from the downstream config: a GRAM file only starts the same learner.
#   python tools/meta_train.py configs/gram/meta_coop_toy.py
#   -> work_dirs/gram/meta_coop_toy/gram.safetensors
from mmengine.config import read_base

with read_base():
    from ._meta_toy import *

downstream = "../coop/toy_hues.py"  # backbone and learner: those of this run (relative to this file)
meta.iterations = 1000  # CoOp meta-trains on cached image features: ~4 tasks per second on one core
