"""Zero-shot classification with a CLIP backbone and hand-written prompt templates."""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from .backbones import PromptableCLIP, build_clip, get_arch
from .datasets.loading import describe_error, load_image
from .errors import UserError
from .learners.common import class_text_features  # moved below the learners; re-exported here
from .progress import bar_disabled

DEFAULT_TEMPLATE = "a photo of a {}."


class RandomWeightsWarning(UserWarning):
    """A classifier was built with random weights without asking for them."""


class FixedClassesError(UserError, ValueError):
    """A learner asked for classes its learned parameters cannot serve (one context per trained class...):
    ``learner`` names it, ``problem`` says why."""

    def __init__(self, learner: str, problem: str) -> None:
        self.learner, self.problem = learner, problem
        super().__init__(f"{learner} cannot classify other classes than its trained ones: {problem}; leave the "
                         f"class names out to classify with them")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.learner, self.problem)


class ImageReadError(UserError, ValueError):
    """An image file given to :meth:`PromptedClassifier.predict` that cannot be read; the message names it."""

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
    A learner whose learned parameters belong to its classes (CoOp with class-specific contexts)
    serves only those: other class names are a :class:`FixedClassesError` saying why.

    ``own_classes``: whether the learner's class names at construction are its own (a checkpoint's:
    the classes it was trained with), kept as :attr:`own_class_names` for :meth:`predict`'s default;
    ``False`` for a bare backbone (zero-shot from an architecture name), which has none.
    """

    def __init__(self, learner, own_classes: bool = True) -> None:
        self.learner = learner.eval()
        self.backbone: PromptableCLIP = learner.backbone
        #: the classes the learner came with (None: none of its own, every call names its classes)
        self.own_class_names: list[str] | None = list(learner.class_names) if own_classes else None

    def check_classes(self, class_names: Sequence[str]) -> list[str]:
        """``class_names`` as a list, checked (:func:`check_class_names`) and servable by the learner;
        a :class:`FixedClassesError` saying why when the learner cannot classify them."""
        names = check_class_names(class_names)
        problem = class_set_problem(self.learner, names, self.own_class_names)
        if problem:
            raise FixedClassesError(type(self.learner).__name__, problem)
        return names

    def _use_classes(self, names: list[str]) -> None:
        """Switch the learner to ``names``; one that refuses them (a description source covering none of them)
        is switched back, so that no later call meets its half-switched state."""
        previous = list(self.learner.class_names)
        if names == previous:
            return
        try:
            self.learner.set_classes(names)
        except Exception:
            self.learner.set_classes(previous)
            raise

    @torch.no_grad()
    def logits(self, images: ImageInput, class_names: Sequence[str]) -> torch.Tensor:
        """Logits ``(B, len(class_names))``."""
        names = self.check_classes(class_names)
        batch = self.backbone.prepare_images(images)  # checked before the class prompts are rebuilt
        self._use_classes(names)
        return self.learner(batch)

    def classify(self, images: ImageInput, class_names: Sequence[str]) -> torch.Tensor:
        """Probabilities ``(B, len(class_names))`` for a batch of images: PIL images, ``(H, W, 3)``
        uint8 numpy arrays or paths (preprocessed as the weights were trained), or a float tensor
        already resized and normalised (used as given)."""
        return self.logits(images, class_names).softmax(dim=-1)

    @torch.no_grad()
    def predict(self, images: Iterable[str | os.PathLike | Image.Image | np.ndarray],
                class_names: Sequence[str] | None = None, top_k: int = 5, batch_size: int = 64,
                progress: bool = False) -> list[dict[str, Any]]:
        """The ``top_k`` classes of each of many images, read and classified ``batch_size`` at a time.

        ``images``: image paths (``str`` or ``os.PathLike``; ``<archive>.zip@<member>`` too), PIL images
        or ``(H, W, 3)`` uint8 arrays, in any iterable; a file is decoded only when its batch comes, and
        one that cannot be read is an :class:`ImageReadError` naming it. ``class_names``: the classes to
        choose from, by default the learner's own (:attr:`own_class_names`). ``progress`` shows a bar
        over the batches on stderr (``$VLPROMPT_PROGRESS`` decides off a terminal).

        Returns one dict per image, in order: ``{"image": <the path as a string, or the image's index
        for an in-memory image>, "top": [[class name, probability], ...]}``, the ``min(top_k, classes)``
        most probable classes, most probable first; probabilities are over all the classes.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a whole number >= 1, got {top_k!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        if class_names is None:
            if self.own_class_names is None:
                raise ValueError("this classifier has no class names of its own (zero-shot CLIP from an "
                                 "architecture name): pass class_names")
            class_names = self.own_class_names
        names = self.check_classes(class_names)  # before any image is read
        self._use_classes(names)
        if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
            images = [images]
        total = len(images) if isinstance(images, Sequence) else None
        k = min(top_k, len(names))
        items = iter(enumerate(images))
        batches = iter(lambda: list(itertools.islice(items, batch_size)), [])
        n_batches = None if total is None else -(-total // batch_size)
        out: list[dict[str, Any]] = []
        for chunk in tqdm(batches, total=n_batches, desc="predicting", unit="batch", leave=False,
                          disable=bar_disabled() if progress else True):
            keys, pixels = zip(*(_read_image(i, image) for i, image in chunk), strict=True)
            probs = self.learner(self.backbone.prepare_images(list(pixels))).float().softmax(dim=-1).cpu()
            values, indices = probs.topk(k, dim=-1)
            for key, row_p, row_i in zip(keys, values.tolist(), indices.tolist(), strict=True):
                out.append({"image": key, "top": [[names[j], p] for j, p in zip(row_i, row_p, strict=True)]})
        return out


def _read_image(index: int, image: Any) -> tuple[str | int, Image.Image | np.ndarray]:
    """``(what names the image in :meth:`PromptedClassifier.predict`'s output, its pixels)``; a path is decoded
    here, and one that cannot be is an :class:`ImageReadError` naming the file."""
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        try:
            return path, load_image(path)
        except Exception as err:  # noqa: BLE001 - any decoder failure means the file is unusable
            raise ImageReadError(f"cannot read image {path} ({describe_error(err, path)})") from None
    if isinstance(image, (Image.Image, np.ndarray)):
        return index, image
    raise TypeError(f"images[{index}]: expected an image path, a PIL image or a numpy array, "
                    f"got {type(image).__name__}")


def class_set_problem(learner: Any, class_names: Sequence[str], own: Sequence[str] | None = None) -> str | None:
    """Why ``learner`` cannot classify ``class_names`` with what it learned, or ``None`` when it can.

    Asks the learner (``PromptLearner.class_set_problem``) when it can say; otherwise tells CoOp's (and
    KgCoOp's, MCoOp's) class-specific contexts (``ctx`` of shape ``(classes, n_ctx, width)``) apart, the one
    kind of learned parameter that belongs to a class list: it serves only the classes it was built with
    (else ``own``), in their order. Learners with class descriptions (CoOp's ``descriptions``, KAPT's
    ``knowledge``) take any class: they follow their own ``on_missing`` for a class the descriptions they
    carry do not cover, and refuse a class set none of which is described.
    """
    from .learners import CoOp

    ask = getattr(learner, "class_set_problem", None)
    if callable(ask):
        return ask(class_names)
    ctx = getattr(learner, "ctx", None)
    if isinstance(learner, CoOp) and isinstance(ctx, torch.Tensor) and ctx.dim() == 3:
        trained = list(getattr(learner, "_init_class_names", None) or own or [])
        if list(class_names) != trained:
            return (f"{type(learner).__name__} with class-specific contexts learned one context per trained class "
                    f"({ctx.shape[0]} classes, in their order)")
    return None


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
    learner = ZeroShotCLIP(backbone, ["object"], templates=cfg.get("templates", DEFAULT_TEMPLATE))
    return PromptedClassifier(learner, own_classes=False)
