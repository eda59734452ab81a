# PromptSRC few-shot recipe (PromptSRC/vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml) on fgvc_aircraft: all classes,
# K shots (16 here; set train_dataloader.dataset.num_shots for 1/2/4/8), tested on all classes; 50 epochs,
# GPA mean 45, std 5 (StanfordCars, Flowers102, FGVCAircraft, DTD and EuroSAT).
from mmengine.config import read_base

from vlprompt.learners.promptsrc.gpa import GaussianPromptAggregation

with read_base():
    from ..._base_.datasets.fgvc_aircraft import *
    from .._method import *

train_dataloader.batch_size = train_batch_size
train_dataloader.dataset.subsample = "all"
train_dataloader.dataset.num_shots = 16
test_dataloader.dataset.subsample = "all"
protocol = dict(name="few-shot", num_shots=16)
train_cfg.max_epochs = 50
custom_hooks = [dict(type=GaussianPromptAggregation, mean=45, std=5)]
