# GRAM + CoOp on imagenet_xd: configs/coop/imagenet_xd.py, cross-dataset source run (tools/transfer.py tests the
# targets), started from and trained with a GRAM file. GRAM is reimplemented from the paper (Li et al., ICCV
# 2023; no official code): its open design choices are settings of configs/gram/_meta_cc3m.py, listed in the
# README.
# Make the file first:  python tools/meta_train.py configs/gram/meta_coop_cc3m_xd.py
from mmengine.config import read_base

from vlprompt.meta import GRAMModel

with read_base():
    from ...coop.imagenet_xd import *

model.type = GRAMModel
model.gram = dict(file="work_dirs/gram/meta_coop_cc3m_xd/gram.safetensors", init=True, regulate=True,
                  regulator=None)  # None: the file's regulator; "identity": plain gradients
