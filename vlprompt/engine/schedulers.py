"""The learning-rate schedule of the published prompt-learning recipes (Dassl's).

Epoch 1 runs at a constant warm-up LR (1e-5); then cosine annealing over ``max_epochs`` epochs,
stepped once per epoch: epoch ``k >= 2`` runs at ``base * (1 + cos(pi * (k - 2) / max_epochs)) / 2``.
The LR never reaches 0 (the cosine period is ``max_epochs``, not the epochs left after warm-up).
"""

from __future__ import annotations

import math

from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import _ParamScheduler
from mmengine.registry import PARAM_SCHEDULERS


def dassl_lr(epoch: int, base_lr: float, max_epochs: int, warmup_epochs: int = 1, warmup_lr: float = 1e-5) -> float:
    """LR of 0-based ``epoch`` under constant warm-up then per-epoch cosine annealing."""
    if epoch < warmup_epochs:
        return warmup_lr
    return 0.5 * base_lr * (1 + math.cos(math.pi * (epoch - warmup_epochs) / max_epochs))


class _WarmupCosineParam(_ParamScheduler):
    """Closed-form schedule (no chained multiplications), so a resumed run gets the same LRs."""

    def __init__(self, optimizer, param_name: str, end: int, warmup_epochs: int = 1,
                 warmup_lr: float = 1e-5, begin: int = 0, by_epoch: bool = True, **kwargs) -> None:
        if begin != 0:
            raise ValueError("WarmupCosineLR covers the whole run: begin must be 0")
        self.max_epochs, self.warmup_epochs, self.warmup_lr = end, warmup_epochs, warmup_lr
        super().__init__(optimizer, param_name, begin=0, end=end, by_epoch=by_epoch, **kwargs)

    def _get_value(self) -> list[float]:
        return [dassl_lr(self.last_step, base, self.max_epochs, self.warmup_epochs, self.warmup_lr)
                for base in self.base_values]


@PARAM_SCHEDULERS.register_module(force=True)
class WarmupCosineLR(LRSchedulerMixin, _WarmupCosineParam):
    """Dassl's ``cosine`` LR with ``WARMUP_TYPE: constant`` (see the module docstring).

    ``end`` is the number of epochs (mmengine fills it in from ``train_cfg.max_epochs``).
    """
