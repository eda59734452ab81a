"""DePT: decoupled prompt tuning, a plug-in over a prompt learner.

Zhang et al., "DePT: Decoupled Prompt Tuning", CVPR 2024 (official code: Koorye/DePT, where it is called
"ExtrasLinearProbe"). Beside the learner's own prompt branch (temperature-scaled cosine logits), a Channel Adjusted
Transfer (CAT) head learns the base task from the *raw* (un-normalised) features of the same prompted pass: a
per-channel scale and shift of the image features, another of the text features, then one linear classifier over
the training classes. In training the head sees the text rows of the labels' classes and the image rows as 2B
samples of one cross-entropy; the loss is ``(1 - w) CE(prompt) + w CE(head)`` (w = 0.7) plus the learner's own
terms. At test time the logits are ``(1 - w) prompt + w head`` on classes the head was trained on, the prompt
branch alone on any other class set.

The official code decides "base" per run (``SUBSAMPLE_CLASSES == 'base'``, or all classes of an ImageNet set, with
the head's rows cut to ImageNet-A/R's 200 classes); here the rule is the class names: the head serves when every
current class is one of its classes (its rows for them), which gives the same choice in every published protocol
(base / new of base-to-novel, the ImageNet variants of domain generalisation, the other cross-dataset targets).

:func:`with_dept` makes the DePT variant of a learner class (registered ``dept_<name>``); its features come from
the learner's ``encode_images`` / ``encode_classes`` with ``normalize=False``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import PromptLearner, register_learner
from .cocoop import CoCoOp
from .coop import CoOp
from .kgcoop import KgCoOp
from .maple import MaPLe
from .promptsrc import PromptSRC

DEPT_WEIGHT = 0.7
"""The head's share of the loss and of the fused logits (``TRAINER.LINEAR_PROBE.WEIGHT`` of the official code)."""


class ChannelAffine(nn.Module):
    """``x * scale + shift`` per channel, from the identity (CAT's channel adjustment)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


class CATHead(nn.Module):
    """The channel-adjusted transfer head: one channel adjustment per modality, one linear classifier."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.image = ChannelAffine(dim)
        self.text = ChannelAffine(dim)
        self.linear = nn.Linear(dim, n_classes)


class DePT(PromptLearner):
    """The DePT half of a ``dept_<learner>`` class (the learner's class follows it in the bases)."""

    dept_weight: float
    head_classes: list[str]

    def init_dept(self, dept_weight: float, head_classes: Sequence[str] | None) -> None:
        """Build the head for ``head_classes`` (the classes the learner was built with by default)."""
        if not 0.0 <= float(dept_weight) <= 1.0:
            raise ValueError(f"dept_weight must be in [0, 1], got {dept_weight!r}")
        self.dept_weight = float(dept_weight)
        self._build_head(list(head_classes) if head_classes else list(self._init_class_names))

    def _build_head(self, head_classes: list[str]) -> None:
        self.head_classes = head_classes
        self.dept_head = CATHead(self.backbone.embed_dim, len(head_classes)).to(self.device)
        self.set_classes(self.class_names)

    def set_classes(self, class_names: Sequence[str]) -> None:
        """Switch classes; the head serves them when it knows every one (its rows for them)."""
        super().set_classes(class_names)
        known = {name: i for i, name in enumerate(getattr(self, "head_classes", []))}
        self.head_rows = (torch.tensor([known[n] for n in self.class_names], device=self.device)
                          if self.class_names and all(n in known for n in self.class_names) else None)

    # ------------------------------------------------------------------ features and logits
    def _raw_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw and normalised image and class features of one prompted pass."""
        raw_images = self.encode_images(images, normalize=False)
        image_features = F.normalize(raw_images, dim=-1)
        raw_classes = self.encode_classes(image_features, normalize=False)
        return raw_images, image_features, raw_classes, F.normalize(raw_classes, dim=-1)

    def head_logits(self, raw_images: torch.Tensor) -> torch.Tensor:
        """The head's logits ``(B, C)`` for the current classes (rows of its own)."""
        head = self.dept_head
        logits = head.linear(head.image(raw_images).to(head.linear.weight.dtype))
        return logits[:, self.head_rows.to(logits.device)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Fused logits on the head's classes, the prompt branch's on any other class set."""
        if self.head_rows is None:
            return super().forward(images)
        raw_images = self.encode_images(images, normalize=False)
        prompt = self.class_logits(F.normalize(raw_images, dim=-1))
        w = self.dept_weight
        return (1.0 - w) * prompt + w * self.head_logits(raw_images).to(prompt.dtype)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, ce_logits=None) -> dict[str, torch.Tensor]:
        """``loss_ce`` (the prompt branch, times 1 - w), ``loss_dept`` (the head on text and image rows, times w)
        and the learner's own terms."""
        if self.head_rows is None:
            raise ValueError(f"{type(self).__name__} trains its head on its own classes ({len(self.head_classes)}: "
                             f"{self.head_classes[:3]}...); the current classes are others")
        raw_images, image_features, raw_classes, class_features = self._raw_features(images)
        logits = self.logits(image_features, class_features.to(image_features.dtype))
        if raw_classes.dim() == 3:  # one set of class features per image (CoCoOp)
            text_rows = raw_classes[torch.arange(len(labels), device=labels.device), labels]
        else:
            text_rows = raw_classes[labels]
        head = self.dept_head
        rows = torch.cat([head.text(text_rows), head.image(raw_images)]).to(head.linear.weight.dtype)
        head_labels = self.head_rows.to(labels.device)[labels]
        w = self.dept_weight
        losses = {
            "loss_ce": (1.0 - w) * F.cross_entropy(logits if ce_logits is None else ce_logits(logits), labels),
            "loss_dept": w * F.cross_entropy(head.linear(rows), torch.cat([head_labels, head_labels])),
        }
        losses.update(self.extra_losses(images, labels, image_features, class_features, logits))
        return losses

    # ------------------------------------------------------------------ state
    def adopt_learned(self, state: Mapping[str, torch.Tensor], recorded: Mapping[str, Any], path: Any) -> None:
        """A learned file's head (its classes) replaces the one built from the config's classes."""
        super().adopt_learned(state, recorded, path)
        classes, weight = recorded.get("head_classes"), state.get("dept_head.linear.weight")
        if weight is None:
            return  # check_state_fits names what is missing
        if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes) and len(classes) == len(weight)):
            raise ValueError(f"{path}: learner.head_classes must name the {len(weight)} rows of dept_head.linear, "
                             f"got {classes!r:.200}")
        if classes != self.head_classes:
            self._build_head(list(classes))

    def hparams(self) -> dict:
        return {**super().hparams(), "dept_weight": self.dept_weight, "head_classes": list(self.head_classes)}


def with_dept(base: type[PromptLearner]) -> type[PromptLearner]:
    """The DePT variant of learner class ``base``, registered as ``dept_<base name>``: ``base``'s arguments plus
    ``dept_weight`` (the head's share, 0.7) and ``head_classes`` (the head's classes; by default the classes it is
    built with, i.e. the training classes)."""

    def __init__(self, backbone, class_names, *args, dept_weight: float = DEPT_WEIGHT,
                 head_classes: Sequence[str] | None = None, **kwargs) -> None:
        base.__init__(self, backbone, class_names, *args, **kwargs)
        self.init_dept(dept_weight, head_classes)

    own = inspect.signature(__init__).parameters
    params = [p for p in inspect.signature(base.__init__).parameters.values() if p.kind != p.VAR_KEYWORD]
    __init__.__signature__ = inspect.Signature(params + [own["dept_weight"], own["head_classes"]])
    name = f"dept_{base.learner_name}"
    cls = type(f"DePT{base.__name__}", (DePT, base), {
        "__init__": __init__, "__module__": __name__,
        "__doc__": f"DePT over {base.__name__} (:func:`with_dept`): {base.__name__}'s arguments, ``dept_weight`` and "
                   "``head_classes``."})
    return register_learner(name)(cls)


DePTCoOp = with_dept(CoOp)
DePTCoCoOp = with_dept(CoCoOp)
DePTKgCoOp = with_dept(KgCoOp)
DePTMaPLe = with_dept(MaPLe)
DePTPromptSRC = with_dept(PromptSRC)
