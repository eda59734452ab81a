"""Test-time adapters, one file each, registered in :data:`vlprompt.registry.ADAPTERS`. (The zero-shot
day-night adaptation, Similarity Min-Max, is a training method and has its own package,
:mod:`vlprompt.daynight`.)

>>> from vlprompt.adapters import TPTViews, build_adapter, default_prompt_learner
>>> learner = default_prompt_learner(clip, class_names)          # or a trained CoOp / KgCoOp / MaPLe ...
>>> adapter = build_adapter(dict(type="tpt"), learner)
>>> views_of = TPTViews.for_backbone(clip, augmix=False)          # augmix=uses_augmix(dataset_name)
>>> for image, label in dataset:
...     logits = adapter(views_of(image))                          # (1, C): view 0 after adaptation
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..learners import PromptLearner
from ..registry import ADAPTERS
from .base import TestTimeAdapter, confident_views, marginal_entropy, view_entropy
from .boost import BoostAdapter
from .cache import ClassCache
from .ctpt import CTPT, text_feature_dispersion
from .dmn import DMN, memory_probs
from .rlcf import (
    RLCF,
    RLCF_S_CONFIDENCES,
    CLIPReward,
    CLIPTeacher,
    NonFiniteRewardError,
    clip_scores,
    reinforce_loss,
    sample_rewards,
)
from .students import ImageEncoderStudent, PromptStudent, Student, default_prompt_learner
from .tda import TDA, tda_query
from .tpt import TPT
from .training_free import MTA, ZERO, TrainingFreeAdapter, mta_mode, zero_votes
from .views import IMAGENET_FAMILY, TPT_AUGMIX_OPS, TPTViews, uses_augmix

__all__ = [
    "ADAPTERS", "BoostAdapter", "CLIPReward", "CLIPTeacher", "CTPT", "ClassCache", "DMN", "IMAGENET_FAMILY",
    "ImageEncoderStudent", "MTA", "NonFiniteRewardError", "PromptStudent", "RLCF", "RLCF_S_CONFIDENCES", "Student",
    "TDA", "TPT", "TPTViews", "TPT_AUGMIX_OPS", "TestTimeAdapter", "TrainingFreeAdapter", "ZERO", "build_adapter",
    "clip_scores", "confident_views", "default_prompt_learner", "list_adapters", "marginal_entropy", "memory_probs",
    "mta_mode", "reinforce_loss", "sample_rewards", "tda_query", "text_feature_dispersion", "uses_augmix",
    "view_entropy", "zero_votes",
]


def list_adapters() -> list[str]:
    """Registered adapter names."""
    return sorted(ADAPTERS.module_dict)


def build_adapter(cfg: Mapping[str, Any] | str, learner: PromptLearner, **overrides: Any
                  ) -> TestTimeAdapter | TrainingFreeAdapter:
    """Build an adapter from a config dict (``{"type": "rlcf", "teacher": {...}, ...}``) or a name.

    ``learner`` is what the adapter works on (see each adapter); ``overrides`` replace config keys.
    """
    cfg = {"type": cfg} if isinstance(cfg, str) else dict(cfg)
    cfg.update(overrides)
    name = cfg.pop("type", None)
    if not isinstance(name, str):
        raise ValueError(f"an adapter config needs a 'type' naming the adapter ({', '.join(list_adapters())}), "
                         f"got {name!r}")
    cls = ADAPTERS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, (TestTimeAdapter, TrainingFreeAdapter))):
        raise ValueError(f"{name!r} is not a test-time adapter; available: {', '.join(list_adapters())}")
    if not isinstance(learner, PromptLearner):
        raise TypeError(f"build_adapter: learner must be a PromptLearner, got {type(learner).__name__}")
    return cls(learner, **cfg)
