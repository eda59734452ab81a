# GRAM meta-training (reimplemented from the paper: no official code) of PromptSRC's prompt initialisation and
# gradient regulator on a CC3M-style webdataset (img2dataset shards), for configs/gram/promptsrc/imagenet_xd.py
# (the cross-dataset source run's prompt layout). The learner and backbone are read from the downstream config:
# a GRAM file only starts the same learner.
#   python tools/meta_train.py configs/gram/meta_promptsrc_cc3m_xd.py
#   -> work_dirs/gram/meta_promptsrc_cc3m_xd/gram.safetensors
from mmengine.config import read_base

with read_base():
    from ._meta_cc3m import *

downstream = "../promptsrc/imagenet_xd.py"  # backbone and learner: those of this run (relative to this file)
