# KAPT (reimplemented from the paper) on food101: CoOp's recipe, see _method.py.
# Descriptions: ELEVATER's Food-101 knowledge file (MVLPT ships it),
# copied to $VLPROMPT_DATA/food-101/knowledge.tsv
# (class names are matched ignoring case and underscores; `tools/prepare_data.py verify` reports coverage).
# ELEVATER records carry def_wiki (Wiktionary), def_wn (WordNet) and path_wn; the Wiktionary definition is used.
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.food101 import *
    from ._method import *

knowledge_file = "food-101/knowledge.tsv"  # relative to the data root, or an absolute path
model.learner.knowledge = dict(file=knowledge_file, field="def_wiki")
train_dataloader.batch_size = train_batch_size
