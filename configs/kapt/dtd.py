# KAPT (reimplemented from the paper) on dtd: CoOp's recipe, see _method.py.
# Descriptions: ELEVATER's DTD knowledge file (MVLPT ships it),
# copied to $VLPROMPT_DATA/dtd/knowledge.tsv
# (class names are matched ignoring case and underscores; `tools/prepare_data.py verify` reports coverage).
# ELEVATER records carry def_wiki (Wiktionary), def_wn (WordNet) and path_wn; the Wiktionary definition is used.
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.dtd import *
    from ._method import *

knowledge_file = "dtd/knowledge.tsv"  # relative to the data root, or an absolute path
model.learner.knowledge = dict(file=knowledge_file, field="def_wiki")
train_dataloader.batch_size = train_batch_size
