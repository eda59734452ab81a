# GRAM meta-training (reimplemented from the paper: no official code) of VPT's prompt initialisation and
# gradient regulator on a CC3M-style webdataset (img2dataset shards), for configs/gram/vpt/. The learner and
# backbone are read from the downstream config: a GRAM file only starts the same learner.
#   python tools/meta_train.py configs/gram/meta_vpt_cc3m.py
#   -> work_dirs/gram/meta_vpt_cc3m/gram.safetensors
from mmengine.config import read_base

with read_base():
    from ._meta_cc3m import *

downstream = "../vpt/imagenet.py"  # backbone and learner: those of this run (relative to this file)
