"""Prompt learners, one file each, registered in :data:`vlprompt.registry.LEARNERS`.

>>> from vlprompt.learners import build_learner
>>> learner = build_learner("coop", backbone=clip, class_names=names, n_ctx=4, ctx_init="a photo of a")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..backbones import PromptableCLIP
from ..registry import LEARNERS
from .base import PromptLearner
from .clip_lora import CLIPLoRA
from .cocoop import CoCoOp
from .coop import CoOp
from .dept import DePTCoCoOp, DePTCoOp, DePTKgCoOp, DePTMaPLe, DePTPromptSRC
from .ivlp import IVLP
from .kapt import KAPT
from .kgcoop import KgCoOp
from .maple import MaPLe
from .mvlpt import MUPT, MVPT, MCoOp
from .promptkd import PromptKD
from .promptsrc import PromptSRC
from .tcp import TCP
from .tip_adapter import TipAdapter
from .vpt import VPT
from .zsclip import ZeroShotCLIP

__all__ = [
    "CLIPLoRA", "DePTCoCoOp", "DePTCoOp", "DePTKgCoOp", "DePTMaPLe", "DePTPromptSRC",
    "IVLP", "KAPT", "LEARNERS", "MUPT", "MVPT", "VPT", "CoCoOp", "CoOp", "KgCoOp", "MCoOp", "MaPLe",
    "PromptKD", "PromptLearner", "PromptSRC", "TCP", "TipAdapter",
    "ZeroShotCLIP", "build_learner", "list_learners", "settings_as_built",
]


def list_learners() -> list[str]:
    """Registered learner names."""
    return sorted(LEARNERS.module_dict)


def settings_as_built(learner_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A config's ``model.learner`` as the learner it builds records it (its ``type`` and
    :meth:`PromptLearner.settings_as_built`); unknown types are returned as they are."""
    cls = LEARNERS.get(learner_cfg.get("type")) if isinstance(learner_cfg.get("type"), str) else None
    if cls is None:
        return dict(learner_cfg)
    return {**cls.settings_as_built({k: v for k, v in learner_cfg.items() if k != "type"}), "type": learner_cfg["type"]}


def build_learner(
    name: str, backbone: PromptableCLIP | dict, class_names: Sequence[str], **hparams: Any
) -> PromptLearner:
    """Build a learner by its registry name."""
    cls = LEARNERS.get(name)
    if cls is None:
        raise KeyError(f"unknown learner {name!r}; available: {', '.join(list_learners())}")
    return cls(backbone=backbone, class_names=class_names, **hparams)
