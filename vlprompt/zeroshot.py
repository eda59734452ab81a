"""Zero-shot classification with a CLIP backbone and hand-written prompt templates."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from .backbones import PromptableCLIP, build_clip, get_arch
from .learners.common import class_text_features  # moved below the learners; re-exported here

DEFAULT_TEMPLATE = "a photo of a {}."


class RandomWeightsWarning(UserWarning):
    """A classifier was built with random weights without asking for them."""

ImageInput = torch.Tensor | Image.Image | Sequence[Image.Image]


class ZeroShotClassifier(nn.Module):
    """CLIP zero-shot classifier over a fixed set of class names.

    The class embeddings are computed once, at construction or :meth:`set_classes`, and kept as a
    buffer; only images are encoded per call.
    """

    def __init__(
        self,
        backbone: PromptableCLIP,
        class_names: Sequence[str],
        templates: str | Sequence[str] = DEFAULT_TEMPLATE,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.templates = [templates] if isinstance(templates, str) else list(templates)
        self.register_buffer("text_features", torch.empty(0), persistent=False)
        self.class_names: list[str] = []
        self.set_classes(class_names)

    def set_classes(self, class_names: Sequence[str]) -> None:
        """Switch to another set of class names (recomputes the class embeddings)."""
        self.class_names = list(class_names)
        self.text_features = class_text_features(self.backbone, self.class_names, self.templates)

    @torch.no_grad()
    def forward(self, images: ImageInput) -> torch.Tensor:
        """Logits ``(B, C)``: temperature-scaled cosine similarities."""
        feats = self.backbone.encode_image(self.backbone.prepare_images(images), normalize=True)
        return self.backbone.logit_scale * feats @ self.text_features.to(feats.dtype).t()

    def predict_proba(self, images: ImageInput) -> torch.Tensor:
        """Class probabilities ``(B, C)``."""
        return self(images).softmax(dim=-1)


class PromptedClassifier:
    """What :func:`load_prompted_clip` returns: classify images with any class names.

    It wraps a prompt learner (zero-shot CLIP is the learner with nothing learned); switching
    the class names rebuilds only the class tokens and features, never the learned prompts.
    """

    def __init__(self, learner) -> None:
        self.learner = learner.eval()
        self.backbone: PromptableCLIP = learner.backbone

    @torch.no_grad()
    def logits(self, images: ImageInput, class_names: Sequence[str]) -> torch.Tensor:
        """Logits ``(B, len(class_names))``."""
        names = check_class_names(class_names)
        batch = self.backbone.prepare_images(images)  # checked before the class prompts are rebuilt
        if names != self.learner.class_names:
            self.learner.set_classes(names)
        return self.learner(batch)

    def classify(self, images: ImageInput, class_names: Sequence[str]) -> torch.Tensor:
        """Probabilities ``(B, len(class_names))`` for a batch of images: PIL images, ``(H, W, 3)``
        uint8 numpy arrays or paths (preprocessed as the weights were trained), or a float tensor
        already resized and normalised (used as given)."""
        return self.logits(images, class_names).softmax(dim=-1)


def check_class_names(class_names: Any) -> list[str]:
    """A non-empty list of distinct strings, or an error that says what is wrong with it."""
    if isinstance(class_names, str):
        raise TypeError(f"class_names must be a list of names, not the string {class_names!r} "
                        f"(for one class: [{class_names!r}])")
    if not isinstance(class_names, Sequence) or not class_names:
        raise TypeError(f"class_names must be a non-empty list of strings, got {class_names!r}")
    names = list(class_names)
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise TypeError(f"class_names[{i}] = {name!r} is not a non-empty string")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise ValueError(f"class_names[{seen[name]}] and class_names[{i}] are both {name!r}")
        seen[name] = i
    return names


def load_prompted_clip(path_or_config: str | os.PathLike | Mapping[str, Any], **overrides: Any) -> PromptedClassifier:
    """A ready classifier from a training checkpoint, a backbone name or a config dict.

    Examples: ``load_prompted_clip("work_dirs/coop_dtd/learned.safetensors")`` (any learner),
    ``load_prompted_clip("toy")`` (the packaged tiny CLIP, zero-shot),
    ``load_prompted_clip({"backbone": "ViT-B-16", "pretrained": "openai"})`` or
    ``load_prompted_clip("ViT-B-16", pretrained="/data/ViT-B-16.pt", templates=[...])``.
    """
    from .learners import ZeroShotCLIP

    device = overrides.pop("device", "cpu")
    if not isinstance(path_or_config, Mapping) and Path(path_or_config).suffix in (".safetensors", ".pth", ".pt"):
        from .learned import BACKBONE_KEYS, load_learner

        unknown = sorted(set(overrides) - {"backbone", "pretrained", "quick_gelu"})
        if unknown:
            raise TypeError(f"load_prompted_clip({str(path_or_config)!r}): unknown settings {unknown} for a "
                            f"checkpoint (accepted: device, {', '.join(BACKBONE_KEYS[1:])}, backbone)")
        backbone = {("name" if k == "backbone" else k): v for k, v in overrides.items()}
        return PromptedClassifier(load_learner(path_or_config, device=device, backbone=backbone or None))
    cfg = dict(path_or_config) if isinstance(path_or_config, Mapping) else {"backbone": str(path_or_config)}
    cfg.update(overrides)
    try:
        arch = get_arch(cfg["backbone"])
    except KeyError as err:
        raise ValueError(f"cannot load a prompted CLIP from {path_or_config!r}: {err.args[0]}") from None
    pretrained = cfg.get("pretrained", next(iter(arch.local_weights), None))
    if pretrained is None and "pretrained" not in cfg:
        warnings.warn(
            f"load_prompted_clip({path_or_config!r}): {arch.name} has no packaged weights, so this classifier has "
            f"random weights and its predictions mean nothing; pass pretrained='openai' (an open_clip tag) or a "
            f"weight file, or pretrained=None to ask for random weights",
            RandomWeightsWarning, stacklevel=2)
    backbone = build_clip(arch.name, pretrained=pretrained, device=cfg.get("device", device))
    return PromptedClassifier(ZeroShotCLIP(backbone, ["object"], templates=cfg.get("templates", DEFAULT_TEMPLATE)))
