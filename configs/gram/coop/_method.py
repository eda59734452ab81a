# GRAM + CoOp: configs/coop's recipe on any dataset, base-to-novel (tools/base2novel.py) and few-shot
# (tools/fewshot.py), started from and trained with a GRAM file. GRAM is reimplemented from the paper (Li et al.,
# ICCV 2023; no official code): its open design choices are settings of configs/gram/_meta_cc3m.py (docs/methods).
# Make the file first:  python tools/meta_train.py configs/gram/meta_coop_cc3m.py  (the toy world:
# meta_coop_toy.py; ImageNet's cross-dataset source run, imagenet_xd: meta_coop_cc3m_xd.py)
from mmengine.config import read_base

from vlprompt.meta import GRAMModel

with read_base():
    from ...coop._method import *

model.type = GRAMModel
model.gram = dict(file="work_dirs/gram/meta_coop_cc3m/gram.safetensors", init=True, regulate=True,
                  regulator=None)  # None: the file's regulator; "identity": plain gradients
# the files of the other meta-training corpora (names starting with _ stay out of the run's config)
for _key, _file in (("toy", "work_dirs/gram/meta_coop_toy/gram.safetensors"),
                   ("imagenet+cross_dataset", "work_dirs/gram/meta_coop_cc3m_xd/gram.safetensors")):
    _entry = recipe.get(_key, {})
    recipe[_key] = {**_entry, "model": {**_entry.get("model", {}), "gram": dict(file=_file)}}
