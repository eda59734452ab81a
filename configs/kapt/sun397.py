# KAPT (reimplemented from the paper) on sun397: CoOp's recipe, see _method.py.
# Descriptions: ELEVATER has no SUN397 file: a {class: [sentences]} JSON
# (e.g. CuPL's prompts), copied to $VLPROMPT_DATA/sun397/knowledge.json
# (class names are matched ignoring case and underscores; `tools/prepare_data.py verify` reports coverage).
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.sun397 import *
    from ._method import *

knowledge_file = "sun397/knowledge.json"  # relative to the data root, or an absolute path
model.learner.knowledge = dict(file=knowledge_file)
train_dataloader.batch_size = train_batch_size
