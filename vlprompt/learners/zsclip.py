"""Zero-shot CLIP: hand-written templates, nothing learned (the baseline of every table).

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.
CoOp's ``ZeroshotCLIP`` uses one hand-crafted template per dataset; ``ZeroshotCLIP2`` the ensemble
of the 7 selected ImageNet templates. Both are this class with other ``templates``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..backbones import PromptableCLIP
from ..registry import LEARNERS
from .base import PromptLearner
from .common import class_text_features, prompt_class_name


@LEARNERS.register_module(name="zsclip")
class ZeroShotCLIP(PromptLearner):
    """CLIP with fixed prompts: one template, or the normalised mean over several."""

    learner_name = "zsclip"

    def __init__(
        self,
        backbone: PromptableCLIP | dict,
        class_names: Sequence[str],
        templates: str | Sequence[str] = "a photo of a {}.",
    ) -> None:
        super().__init__(backbone, class_names)
        self.templates = [templates] if isinstance(templates, str) else list(templates)
        self.register_buffer("class_features", torch.zeros(0), persistent=False)
        self.finish_init()

    def set_classes(self, class_names: Sequence[str]) -> None:
        super().set_classes(class_names)
        self.class_features = class_text_features(self.backbone, self.class_names, self.templates)

    def tokenize_classes(self, class_names: Sequence[str]) -> torch.Tensor:
        return self.backbone.tokenize([self.templates[0].format(prompt_class_name(n)) for n in class_names])

    def encode_classes(self, image_features: torch.Tensor | None = None) -> torch.Tensor:
        return self.class_features

    def hparams(self) -> dict:
        return {"templates": self.templates}
