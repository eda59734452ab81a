# GRAM meta-training (reimplemented from the paper: no official code) of PromptSRC's prompt initialisation and
# gradient regulator on the toy world's unlabelled caption pool, for configs/gram/promptsrc/. The learner and
# backbone are read from the downstream config: a GRAM file only starts the same learner.
#   python tools/meta_train.py configs/gram/meta_promptsrc_toy.py
#   -> work_dirs/gram/meta_promptsrc_toy/gram.safetensors
from mmengine.config import read_base

with read_base():
    from ._meta_toy import *

downstream = "../promptsrc/toy_hues.py"  # backbone and learner: those of this run (relative to this file)
