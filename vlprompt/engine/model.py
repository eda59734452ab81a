"""The one mmengine model that runs every learner, and its data preprocessor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from mmengine.model import BaseDataPreprocessor, BaseModel
from mmengine.registry import MODELS

from ..backbones import build_clip
from ..learners import build_learner


@MODELS.register_module(force=True)
class PromptDataPreprocessor(BaseDataPreprocessor):
    """Moves a collated ``{'img', 'label'}`` batch to the model's device (images in the backbone's dtype)."""

    def forward(self, data: dict, training: bool = False) -> dict[str, Any]:
        data = self.cast_data(data)
        return {"inputs": data["img"], "data_samples": data["label"]}


@MODELS.register_module(force=True)
class PromptModel(BaseModel):
    """mmengine wrapper around a :class:`~vlprompt.learners.PromptLearner`.

    Args:
        backbone: arguments of :func:`vlprompt.backbones.build_clip` (``name``, ``pretrained``...).
        learner: ``dict(type=<learner name>, **hyper-parameters)``.
        class_names: the training classes (``tools/train.py`` fills them in from the dataset).
    """

    def __init__(self, backbone: dict, learner: dict, class_names: Sequence[str] | None = None,
                 data_preprocessor: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor or dict(type=PromptDataPreprocessor))
        if not class_names:
            raise ValueError("PromptModel needs class_names (tools/train.py takes them from the dataset)")
        self.backbone_cfg = dict(backbone)
        self.learner_cfg = dict(learner)
        hparams = dict(learner)
        name = hparams.pop("type")
        self.learner = build_learner(name, build_clip(**self.backbone_cfg), list(class_names), **hparams)

    @property
    def class_names(self) -> list[str]:
        return self.learner.class_names

    def set_classes(self, class_names: Sequence[str]) -> None:
        """Evaluate on another class set (novel classes, another dataset)."""
        self.learner.set_classes(class_names)

    def forward(self, inputs: torch.Tensor, data_samples: torch.Tensor | None = None, mode: str = "tensor"):
        if mode == "loss":
            return self.learner.loss(inputs, data_samples)
        logits = self.learner(inputs)
        if mode == "predict":
            logits, labels = logits.float().cpu(), data_samples.cpu()  # one device sync per batch
            return [{"logits": lg, "label": lb} for lg, lb in zip(logits, labels, strict=True)]
        if mode == "tensor":
            return logits
        raise ValueError(f"unknown mode {mode!r}: expected loss, predict or tensor")

    def metadata(self) -> dict[str, Any]:
        """What a checkpoint needs to rebuild this model without the config."""
        return {
            "backbone": self.backbone_cfg,
            "learner": {"type": self.learner.learner_name, **self.learner.hparams()},
            "class_names": list(self.class_names),
            "backbone_info": self.learner.backbone.info.to_dict(),
            "backbone_weights": self.learner.backbone.weights_digest,
        }
