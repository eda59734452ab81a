# GRAM + PromptSRC on toy_hues: configs/promptsrc/toy_hues.py, base-to-novel (tools/base2novel.py) and few-shot
# (tools/fewshot.py), started from and trained with a GRAM file. GRAM is reimplemented from the paper (Li et
# al., ICCV 2023; no official code): its open design choices are settings of configs/gram/_meta_toy.py, listed
# in the README.
# Make the file first:  python tools/meta_train.py configs/gram/meta_promptsrc_toy.py
from mmengine.config import read_base

from vlprompt.meta import GRAMModel

with read_base():
    from ...promptsrc.toy_hues import *

model.type = GRAMModel
model.gram = dict(file="work_dirs/gram/meta_promptsrc_toy/gram.safetensors", init=True, regulate=True,
                  regulator=None)  # None: the file's regulator; "identity": plain gradients
