# Tip-Adapter-F (gaopengcuhk/Tip-Adapter@d0e2d6f, main.py run_tip_adapter_F): Tip-Adapter's cache (configs/
# tip_adapter) whose keys are trained: AdamW lr 1e-3, eps 1e-4, weight decay 0.01 (torch's default), cosine
# annealing to 0 over the whole run stepped every iteration, batch 256 shuffled through the cache's crops and
# flips, 20 epochs (EuroSAT 100), cross-entropy at the initial alpha and beta; then the search on the validation
# split. The official code keeps the epoch with the best TEST accuracy (Tip-Adapter#11); vlprompt keeps the one
# with the best validation accuracy at the initial alpha and beta (the first best), never reading test labels.
from mmengine.config import read_base
from mmengine.optim import CosineAnnealingLR

with read_base():
    from ..tip_adapter._method import *

param_scheduler = dict(type=CosineAnnealingLR, eta_min=0, by_epoch=True, begin=0, end=20, convert_to_iter_based=True)
train_cfg = dict(by_epoch=True, max_epochs=20, val_interval=10**9)
recipe = dict(recipe)
recipe["eurosat"] = dict(recipe["eurosat"], train_cfg=dict(max_epochs=100), param_scheduler=dict(end=100))
