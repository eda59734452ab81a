"""C-TPT: TPT with a term that spreads the class text features apart, for better-calibrated predictions.

Yoon et al., "C-TPT: Calibrated Test-Time Prompt Tuning for Vision-Language Models via Text Feature
Dispersion", ICLR 2024 (official code hee-suk-yoon/C-TPT). TPT's loop and views, with the loss

    entropy of the selected views' mean prediction - lambda x ATFD,

where ATFD, the average text feature dispersion, is the mean L2 distance of the normalised class text features
(the current prompt's, all classes, with gradients) from their centroid. The published lambda: 50 on ImageNet and
the fine-grained sets, 20 on ImageNet-A/-V2/-R/-Sketch (whose C-TPT runs also use AugMix views).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..learners import PromptLearner
from ..registry import ADAPTERS
from .base import marginal_entropy
from .students import PromptStudent
from .tpt import TPT

__all__ = ["CTPT", "text_feature_dispersion"]


def text_feature_dispersion(class_features: torch.Tensor) -> torch.Tensor:
    """ATFD: the mean L2 distance of the normalised class features ``(C, E)`` from their (unnormalised) centroid."""
    return (class_features - class_features.mean(dim=0)).norm(dim=-1).mean()


@ADAPTERS.register_module(name="ctpt")
class CTPT(TPT):
    """C-TPT: test-time prompt tuning that also maximises the dispersion of the class text features.

    Args:
        learner: the learner whose text context is tuned (see :class:`~vlprompt.adapters.TPT`).
        atfd_weight: lambda, the weight of the dispersion term (50; 20 on ImageNet's shifted variants).
        Everything else: as :class:`~vlprompt.adapters.TPT` (prompt variant only: the term is on the prompt).
    """

    method = "ctpt"

    def __init__(self, learner: PromptLearner, *, atfd_weight: float = 50.0, **tpt) -> None:
        if tpt.get("variant", "prompt") != "prompt":
            raise ConfigError(f"C-TPT tunes the text prompt (its term is on the class text features), got "
                              f"variant={tpt['variant']!r}")
        if not atfd_weight >= 0:
            raise ConfigError(f"C-TPT: atfd_weight must be >= 0, got {atfd_weight!r}")
        super().__init__(learner, **tpt)
        self.atfd_weight = float(atfd_weight)
        #: the entropy and dispersion terms of the last step (detached)
        self.last_terms: tuple[torch.Tensor, torch.Tensor] | None = None

    def objective(self, logits: torch.Tensor, index: int) -> torch.Tensor:
        """The entropy of the selected views' mean prediction minus ``atfd_weight`` x the text features' ATFD."""
        assert isinstance(self.student, PromptStudent)
        entropy = marginal_entropy(logits)
        dispersion = text_feature_dispersion(self.student.last_class_features.float())
        self.last_terms = (entropy.detach(), dispersion.detach())
        return entropy - self.atfd_weight * dispersion
