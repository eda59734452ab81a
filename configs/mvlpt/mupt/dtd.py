# MVLPT target adaptation, MUPT on dtd: K shots of every class (5 here; MVLPT's scripts use 1, 5 and 20: set
# train_dataloader.dataset.num_shots), tested on all classes, starting from a source prompt trained on the other
# tasks (configs/mvlpt/mupt/source_coop11.py or your own):
#   python tools/train.py configs/mvlpt/mupt/dtd.py \
#       --cfg-options load_from=work_dirs/mvlpt/mupt_source/learned.safetensors
# Without load_from the prompt starts from its random init (the single-task baseline). A source of another family
# or backbone stops the run before anything is read.
from mmengine.config import read_base

with read_base():
    from ..._base_.datasets.dtd import *
    from ._family import *

train_dataloader.batch_size = train_batch_size
train_dataloader.dataset.subsample = "all"
train_dataloader.dataset.num_shots = 5
test_dataloader.dataset.subsample = "all"
protocol = dict(name="few-shot", num_shots=5)
load_from = None  # the source prompt (a learned.safetensors)
