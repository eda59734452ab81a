# The published prompt-learning schedule (Dassl): SGD momentum 0.9, weight decay 5e-4; one
# constant warm-up epoch at 1e-5, then cosine annealing stepped per epoch. The last epoch's model
# is the one evaluated. Methods set lr and max_epochs.
from mmengine.optim import OptimWrapper
from torch.optim import SGD

from vlprompt.engine import WarmupCosineLR

optim_wrapper = dict(type=OptimWrapper, optimizer=dict(type=SGD, lr=0.002, momentum=0.9, weight_decay=5e-4))
param_scheduler = dict(type=WarmupCosineLR, warmup_epochs=1, warmup_lr=1e-5, by_epoch=True)
train_cfg = dict(by_epoch=True, max_epochs=10, val_interval=10**9)
val_cfg = None
test_cfg = dict()
