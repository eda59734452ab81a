# MVLPT target adaptation with the mcoop family on any dataset: K shots of every class (5 here; MVLPT's scripts use
# 1, 5 and 20: set train_dataloader.dataset.num_shots), tested on all classes, starting from a source prompt trained
# on the other tasks (source_coop11.py or your own):
#   python tools/train.py configs/mvlpt/mcoop/dtd.py \
#       --cfg-options load_from=work_dirs/mvlpt/mcoop_source/learned.safetensors
# Without load_from the prompt starts from its random init (the single-task baseline). A source of another family
# or backbone stops the run before anything is read.
from mmengine.config import read_base

with read_base():
    from ..._base_.datasets.base2novel import *
    from ._family import *

overlays = ["few_shot"]
train_dataloader.batch_size = train_batch_size
load_from = None  # the source prompt (a learned.safetensors)
recipe = dict(few_shot=dict(train_dataloader=dict(dataset=dict(num_shots=5)), protocol=dict(num_shots=5)))
