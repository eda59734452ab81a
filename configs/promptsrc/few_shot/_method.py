# PromptSRC few-shot recipe (PromptSRC/vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml): all classes, K shots (16 here;
# set train_dataloader.dataset.num_shots for 1/2/4/8), tested on all classes; 50 epochs, GPA mean 30, std 30
# (ImageNet, Caltech101, OxfordPets, Food101, UCF101 and SUN397), mean 45, std 5 on the other five.
from mmengine.config import read_base

from vlprompt.learners.promptsrc.gpa import GaussianPromptAggregation

with read_base():
    from .._method import *

overlays = ["few_shot"]
train_cfg.max_epochs = 50
custom_hooks = [dict(type=GaussianPromptAggregation, mean=30, std=30)]
recipe = {name: dict(custom_hooks=[dict(type=GaussianPromptAggregation, mean=45, std=5)])
          for name in ("stanford-cars", "oxford-flowers", "fgvc-aircraft", "dtd", "eurosat")}
