"""Tip-Adapter and Tip-Adapter-F: a cache of few-shot image features beside CLIP's zero-shot classifier.

Zhang et al., "Tip-Adapter: Training-free Adaption of CLIP for Few-shot Classification", ECCV 2022
(gaopengcuhk/Tip-Adapter). The cache's keys are the training images' features, each the mean of its raw features
over ``augment_epochs`` passes of the training pipeline (random crops of 50-100% of the area, flips), normalised
after averaging; its values are the one-hot labels. A test feature ``f`` scores

    100 f.W  +  alpha exp(-beta (1 - f.keys)) values

with ``W`` the normalised zero-shot class features (the template ensemble, normalised, averaged, normalised).
Tip-Adapter-F trains the keys (a ``(N K, D)`` parameter) with the initial alpha and beta; both variants then search
alpha and beta on the tuning split (:meth:`search`), as the official code does on the validation split. Training
for 0 epochs is Tip-Adapter: one learner, one parameter.

Classes the cache does not hold (novel classes, another dataset) get no cache term: the official code has no
base-to-novel protocol, and this choice is vlprompt's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import PromptableCLIP
from ..datasets.templates import resolve_templates
from .base import PromptLearner, RunData, register_learner
from .common import class_text_features, prompt_class_name


def search_grid(scale: float, steps: int) -> list[float]:
    """The official grid ``0.1 + i (scale - 0.1) / steps`` for ``i < steps`` (``scale`` itself excluded)."""
    return [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]


def cache_affinity_logits(features: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                          beta: float) -> torch.Tensor:
    """``exp(-beta (1 - f.keys)) @ values``, written as the official code does (``exp(-(beta - beta A))``)."""
    affinity = features @ keys.t()
    return ((-1) * (beta - beta * affinity)).exp() @ values


@register_learner("tip_adapter")
class TipAdapter(PromptLearner):
    """A few-shot cache beside the zero-shot classifier; its keys train in Tip-Adapter-F.

    Args:
        backbone: the frozen CLIP (or its build arguments).
        class_names: class names, in label order.
        templates: the class prompts (a template, a list, or a set's name); the official code uses the dataset's
            template, and the 7 selected templates on ImageNet.
        alpha, beta: the cache's weight and sharpness: the initial values (what Tip-Adapter-F trains with), which
            the search replaces.
        augment_epochs: passes of the training pipeline averaged into each key (10 as published).
        search_scale, search_step: the search grids of beta and alpha (:func:`search_grid`); the official
            per-dataset scales, steps ``(200, 20)``.
        search: search alpha and beta on the tuning split after training.
        select_epoch: keep the keys of the epoch with the best tuning-split accuracy (at the initial alpha and
            beta; the first best wins). The official code chooses by test accuracy (Tip-Adapter#11); vlprompt never
            reads test labels.
        logit_scale: the fixed scale of the zero-shot logits (100 as published).
        cache_size, cache_classes: the cache's size (N K) and the classes of its values' columns, as a
            checkpoint records them; empty until the training set fills the cache.
    """

    def __init__(
        self,
        backbone: PromptableCLIP | dict,
        class_names: Sequence[str],
        templates: str | Sequence[str] = "a photo of a {}.",
        alpha: float = 1.0,
        beta: float = 1.0,
        augment_epochs: int = 10,
        search_scale: Sequence[float] = (7.0, 3.0),
        search_step: Sequence[int] = (200, 20),
        search: bool = True,
        select_epoch: bool = True,
        logit_scale: float = 100.0,
        cache_size: int = 0,
        cache_classes: Sequence[str] | None = None,
    ) -> None:
        super().__init__(backbone, class_names)
        if isinstance(augment_epochs, bool) or not isinstance(augment_epochs, int) or augment_epochs < 1:
            raise ValueError(f"augment_epochs must be a whole number >= 1, got {augment_epochs!r}")
        if len(search_scale) != 2 or not all(float(s) > 0.1 for s in search_scale):
            raise ValueError(f"search_scale must be two numbers > 0.1 (beta, alpha), got {search_scale!r}")
        if len(search_step) != 2 or not all(isinstance(s, int) and s >= 1 for s in search_step):
            raise ValueError(f"search_step must be two whole numbers >= 1 (beta, alpha), got {search_step!r}")
        if not float(logit_scale) > 0:
            raise ValueError(f"logit_scale must be positive, got {logit_scale!r}")
        cache_classes = list(cache_classes or [])
        if cache_size and not cache_classes:
            raise ValueError("cache_size > 0 needs cache_classes (the classes of the cache's values)")
        self.templates = resolve_templates(templates)
        self.alpha, self.beta = float(alpha), float(beta)
        self.augment_epochs, self.search, self.select_epoch = augment_epochs, bool(search), bool(select_epoch)
        self.search_scale = [float(s) for s in search_scale]
        self.search_step = [int(s) for s in search_step]
        self.logit_scale = float(logit_scale)
        self.cache_classes = cache_classes
        dim = self.backbone.embed_dim
        self.cache_keys = nn.Parameter(torch.zeros(cache_size, dim))
        self.register_buffer("cache_values", torch.zeros(cache_size, len(cache_classes)))
        self.register_buffer("class_features", torch.zeros(0, dim), persistent=False)
        self._best: tuple[float, torch.Tensor] | None = None  # (tuning accuracy, keys) of the best epoch so far
        self._tune: tuple[torch.Tensor, torch.Tensor] | None = None  # the tuning split's features and labels
        self.finish_init()

    # ------------------------------------------------------------------ classes
    def set_classes(self, class_names: Sequence[str]) -> None:
        super().set_classes(class_names)
        with torch.no_grad():
            self.class_features = class_text_features(self.backbone, self.class_names, self.templates)
        position = {name: i for i, name in enumerate(self.cache_classes)}
        self._columns = [position.get(name, -1) for name in self.class_names]

    def tokenize_classes(self, class_names: Sequence[str]) -> torch.Tensor:
        """The first template's prompts (the class features themselves are the ensemble, built above)."""
        return self.backbone.tokenize([self.templates[0].format(prompt_class_name(n)) for n in class_names])

    # ------------------------------------------------------------------ logits
    def encode_images(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        with torch.no_grad():  # nothing in the image path learns
            return self.backbone.encode_image(images, normalize=normalize)

    def cache_logits(self, features: torch.Tensor, beta: float) -> torch.Tensor:
        """The cache term for the current classes ``(B, C)``: zero for a class the cache does not hold."""
        logits = cache_affinity_logits(features, self.cache_keys, self.cache_values.to(features.dtype), beta)
        if self._columns == list(range(len(self.cache_classes))):
            return logits
        out = logits.new_zeros(len(features), len(self._columns))
        held = [i for i, c in enumerate(self._columns) if c >= 0]
        if held:
            out[:, held] = logits[:, [self._columns[i] for i in held]]
        return out

    def encode_classes(self, image_features: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        if not normalize:
            raise ValueError("Tip-Adapter's class features are the frozen templates' mean, kept normalised")
        return self.class_features  # frozen: built once per class set

    def tip_logits(self, features: torch.Tensor, alpha: float | None = None, beta: float | None = None,
                   class_features: torch.Tensor | None = None) -> torch.Tensor:
        """Zero-shot plus ``alpha`` times the cache term, for normalised image features."""
        alpha = self.alpha if alpha is None else alpha
        beta = self.beta if beta is None else beta
        class_features = self.class_features if class_features is None else class_features
        clip_logits = super().logits(features, class_features.to(features.dtype))  # 100 x cosine
        if len(self.cache_keys) == 0:
            return clip_logits
        return clip_logits + self.cache_logits(features, beta) * alpha

    def logits(self, image_features: torch.Tensor, class_features: torch.Tensor) -> torch.Tensor:
        return self.tip_logits(image_features, class_features=class_features)

    # ------------------------------------------------------------------ the cache and the search
    def build_cache(self, batches_per_epoch) -> None:
        """Fill the cache from ``batches_per_epoch()`` (the training set in a fixed order, freshly augmented at
        each call): keys the normalised mean of each image's raw features over :attr:`augment_epochs` calls,
        values its one-hot label."""
        total, labels = None, []
        for epoch in range(self.augment_epochs):
            feats = []
            for images, batch_labels in batches_per_epoch():
                feats.append(self.backbone.encode_image(images).float())
                if epoch == 0:
                    labels.append(batch_labels)
            feats = torch.cat(feats)
            total = feats if total is None else total + feats
        keys = total / self.augment_epochs
        self.set_cache(keys / keys.norm(dim=-1, keepdim=True), torch.cat(labels))

    def set_cache(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """Make the cache ``keys`` ``(N K, D)`` (normalised features) with one-hot ``labels`` over the current
        classes; in place, so an optimizer built already keeps the keys."""
        self.cache_classes = list(self.class_names)
        self.cache_keys.data = keys.to(self.cache_keys.dtype)
        self.cache_values = F.one_hot(labels.long(), len(self.cache_classes)).to(keys)
        self.set_classes(self.class_names)

    def search_alpha_beta(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, float]:
        """The official grid search: beta outer, alpha inner, the first best accuracy (strictly greater) wins;
        ``(0, 0)`` with accuracy 0 when no grid point classifies anything right. Returns ``(beta, alpha, top-1 %)``."""
        clip_logits = super().logits(features, self.class_features.to(features.dtype))
        best = (0.0, 0.0, 0.0)
        for beta in search_grid(self.search_scale[0], self.search_step[0]):
            cache = self.cache_logits(features, beta)
            for alpha in search_grid(self.search_scale[1], self.search_step[1]):
                acc = accuracy(clip_logits + cache * alpha, labels)
                if acc > best[2]:
                    best = (beta, alpha, acc)
        return best

    def _tuning_set(self, data: RunData) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self._tune is None:
            batches = data.tune_batches()
            if batches is None:
                return None
            feats, labels = zip(*((self.encode_images(x), y) for x, y in batches), strict=True)
            self._tune = torch.cat(feats), torch.cat(labels)
        return self._tune

    def before_training(self, data: RunData) -> dict[str, Any] | None:
        if len(self.cache_keys):
            return None  # filled already (a resumed run)
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            raise RuntimeError("tip_adapter builds its cache in one process: run it without a launcher")
        self._best, self._tune = None, None
        self.build_cache(data.train_batches)
        return {"cache": f"{len(self.cache_keys)} images x {self.augment_epochs} augmented passes, "
                         f"{len(self.cache_classes)} classes"}

    def after_training_epoch(self, data: RunData) -> dict[str, Any] | None:
        tune = self._tuning_set(data) if self.select_epoch else None
        if tune is None:
            return None
        acc = accuracy(self.tip_logits(tune[0]), tune[1])
        if self._best is None or acc > self._best[0]:
            self._best = (acc, self.cache_keys.detach().clone())
        return {"tuning top-1": f"{acc:.2f}"}

    def after_training(self, data: RunData) -> dict[str, Any] | None:
        report = {}
        if self._best is not None:
            self.cache_keys.data.copy_(self._best[1])
            report["kept the keys of the epoch with tuning top-1"] = f"{self._best[0]:.2f}"
            self._best = None
        tune = self._tuning_set(data) if self.search else None
        if tune is not None:
            self.beta, self.alpha, acc = self.search_alpha_beta(*tune)
            report.update(beta=round(self.beta, 6), alpha=round(self.alpha, 6), **{"tuning top-1": f"{acc:.2f}"})
        self._tune = None
        return report or None

    # ------------------------------------------------------------------ state
    def learned_state_dict(self) -> dict[str, torch.Tensor]:
        return {"cache_keys": self.cache_keys.detach(), "cache_values": self.cache_values}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: D102
        keys, values = state_dict.get("cache_keys"), state_dict.get("cache_values")
        if keys is not None and values is not None and keys.shape != self.cache_keys.shape:
            self._allocate_cache(keys, values)  # a resumed run's cache
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if not self.cache_classes and len(self.cache_values):  # a resumed run: the cache holds the training classes
            self.cache_classes = list(self.class_names)
            self.set_classes(self.class_names)
        return result

    def _allocate_cache(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Zero keys and values shaped as ``keys`` and ``values`` (what a file is about to load into)."""
        self.cache_keys.data = torch.zeros_like(keys, device=self.cache_keys.device)
        self.cache_values = torch.zeros_like(values, device=self.cache_values.device)

    def adopt_learned(self, state, recorded, path) -> None:
        """The file's cache (its size and classes) and its searched alpha and beta replace the config's."""
        values, classes = state.get("cache_values"), recorded.get("cache_classes")
        if values is None or state.get("cache_keys") is None:
            return  # check_state_fits names what is missing
        if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)
                and values.dim() == 2 and len(classes) == values.shape[1]):
            raise ValueError(f"{path}: learner.cache_classes must name the {tuple(values.shape)[1:]} columns of "
                             f"cache_values, got {classes!r:.200}")
        for key in ("alpha", "beta"):
            value = recorded.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ValueError(f"{path}: learner.{key} must be a number, got {value!r}")
            setattr(self, key, float(value))
        self._allocate_cache(state["cache_keys"], values)
        self.cache_classes = list(classes)
        self.set_classes(self.class_names)

    def hparams(self) -> dict:
        return {"templates": list(self.templates), "alpha": self.alpha, "beta": self.beta,
                "augment_epochs": self.augment_epochs, "search_scale": list(self.search_scale),
                "search_step": list(self.search_step), "search": self.search, "select_epoch": self.select_epoch,
                "logit_scale": self.logit_scale, "cache_size": len(self.cache_keys),
                "cache_classes": list(self.cache_classes)}


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 in percent, as the official ``cls_acc``."""
    return (logits.argmax(-1) == labels).float().mean().item() * 100
