"""TDA: a training-free dynamic adapter, positive and negative caches of the test stream's features.

Karmanov et al., "Efficient Test-Time Adaptation of Vision-Language Models", CVPR 2024 (official code
kdiAAA/TDA). Per test sample, in stream order (:func:`tda_query`, then :meth:`TDA.infer`):

1. the query: with several views, the 10% of lowest entropy (``int(V x 0.1)``) are averaged, features (not
   renormalised) and logits, and the entropy is that of their mean probability; with one view, its own;
2. the prediction's entropy, divided by ``log2(C)`` (as the official code does, on an entropy in nats),
   decides the negative cache: an entry only when it lies strictly inside ``neg.entropy``;
3. both caches admit the query under the predicted class (:class:`~vlprompt.adapters.cache.ClassCache`),
   *before* the sample is predicted;
4. logits = CLIP's + ``pos.alpha`` x the positive read-out - ``neg.alpha`` x the negative one (each entry's
   mask: the classes its probability put strictly inside ``neg.mask``).

The caches persist across the stream and are emptied by :meth:`TDA.restart` (a new run). The order of the
stream therefore shapes the predictions: ``tools/tta.py`` visits the samples in a seeded shuffle
(``stream.seed``), recorded in ``results.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

from ..errors import ConfigError
from ..learners import PromptLearner
from ..registry import ADAPTERS
from .base import confident_views, marginal_entropy, saved_tensor, view_entropy
from .cache import ClassCache
from .training_free import TrainingFreeAdapter

__all__ = ["TDA", "Query", "tda_query"]


class Query(NamedTuple):
    """A sample as TDA sees it: the query feature ``(E,)``, CLIP's logits ``(C,)``, the entropy (nats) and
    probabilities ``(C,)`` of its prediction, and the predicted class."""

    feature: torch.Tensor
    logits: torch.Tensor
    entropy: torch.Tensor
    probs: torch.Tensor
    pred: int


def tda_query(features: torch.Tensor, classes: torch.Tensor, scale: float, fraction: float = 0.1) -> Query:
    """The query of one sample from its normalised view features ``(V, E)`` (view 0 the original): one view
    as it is; several, the mean of the ``int(V x fraction)`` most confident (features and logits), with the
    entropy and probability of their mean prediction."""
    logits = scale * features @ classes.t()
    if features.shape[0] == 1:
        return Query(features[0], logits[0], view_entropy(logits)[0], logits[0].softmax(dim=-1),
                     int(logits[0].argmax()))
    kept = confident_views(logits, fraction)
    mean_logits = logits[kept].mean(dim=0)
    return Query(features[kept].mean(dim=0), mean_logits, marginal_entropy(logits[kept]),
                 logits[kept].softmax(dim=-1).mean(dim=0), int(mean_logits.argmax()))


def _check_cache_spec(name: str, spec: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(spec) - set(defaults))
    if unknown:
        raise ConfigError(f"TDA: {name} has unknown keys {unknown} ({', '.join(defaults)})")
    spec = {**defaults, **spec}
    if not isinstance(spec["capacity"], int) or spec["capacity"] < 1:
        raise ConfigError(f"TDA: {name}.capacity must be an int >= 1, got {spec['capacity']!r}")
    for key in ("entropy", "mask"):
        if key in spec and (len(spec[key]) != 2 or not spec[key][0] < spec[key][1]):
            raise ConfigError(f"TDA: {name}.{key} must be (low, high) with low < high, got {spec[key]!r}")
    return spec


POSITIVE = dict(enabled=True, capacity=3, alpha=2.0, beta=5.0)
"""The positive cache's defaults (the official ImageNet config)."""
NEGATIVE = dict(enabled=True, capacity=2, alpha=0.117, beta=1.0, entropy=(0.2, 0.5), mask=(0.03, 1.0))
"""The negative cache's defaults (the official ImageNet config): ``entropy``, the window of normalised
entropy that admits a sample; ``mask``, the probabilities that count a class as unlikely."""


@ADAPTERS.register_module(name="tda")
class TDA(TrainingFreeAdapter):
    """TDA (Karmanov et al., CVPR 2024): CLIP's logits plus a positive and minus a negative cache read-out.

    Args:
        learner: gives the class features and the image tower (see :class:`TrainingFreeAdapter`).
        shape: ``(classes, dim)`` without a learner (features only).
        positive: ``dict(enabled, capacity, alpha, beta)`` (:data:`POSITIVE`).
        negative: ``dict(enabled, capacity, alpha, beta, entropy=(low, high), mask=(low, high))``
            (:data:`NEGATIVE`).
        selection_p: the share of views averaged into the query (0.1).
    """

    method = "tda"
    keeps_state = True

    def __init__(self, learner: PromptLearner | None, *, shape: tuple[int, int] | None = None,
                 positive: Mapping[str, Any] | None = None,
                 negative: Mapping[str, Any] | None = None, selection_p: float = 0.1) -> None:
        if not 0 < selection_p <= 1:
            raise ConfigError(f"TDA: selection_p must lie in (0, 1], got {selection_p!r}")
        super().__init__(learner, shape)
        self.positive = _check_cache_spec("positive", dict(positive or {}), POSITIVE)
        self.negative = _check_cache_spec("negative", dict(negative or {}), NEGATIVE)
        self.selection_p = float(selection_p)
        classes, dim = self.shape
        self.pos_cache = ClassCache(classes, self.positive["capacity"], dim, device=self.device)
        self.neg_cache = ClassCache(classes, self.negative["capacity"], dim, with_probs=True, device=self.device)
        #: the last sample's query (for tests and diagnostics)
        self.last_query: Query | None = None

    def selects_views(self, n_views: int) -> bool:
        """One view is the query as it is; several are cut to the most confident."""
        return n_views > 1

    # ------------------------------------------------------------------ state
    def carried_state(self) -> dict[str, torch.Tensor]:
        """Both caches and the sample count."""
        state = {"samples_seen": torch.tensor(self.samples_seen), **self.pos_cache.state("positive"),
                 **self.neg_cache.state("negative")}
        return {k: v.detach().cpu().clone() for k, v in state.items()}

    def load_carried_state(self, state: dict[str, torch.Tensor]) -> None:
        self.samples_seen = int(saved_tensor(state, "samples_seen", torch.tensor(0)))
        self.pos_cache.load_state(state, "positive")
        self.neg_cache.load_state(state, "negative")

    def restart(self) -> None:
        """Empty both caches: a new stream."""
        super().restart()
        self.pos_cache.clear()
        self.neg_cache.clear()

    # ------------------------------------------------------------------ one sample
    def update(self, query: Query, classes: int) -> None:
        """Admit ``query`` to the caches (the negative one only inside its entropy window)."""
        if self.positive["enabled"]:
            self.pos_cache.admit(query.pred, query.feature, query.entropy)
        low, high = self.negative["entropy"]
        if self.negative["enabled"] and low < float(query.entropy) / math.log2(classes) < high:
            self.neg_cache.admit(query.pred, query.feature, query.entropy, query.probs)

    def cache_logits(self, query: Query, positive: ClassCache | None = None) -> torch.Tensor:
        """What the caches add to CLIP's logits, ``(C,)`` (``positive`` in place of the positive cache)."""
        pos, neg = self.positive, self.negative
        out = torch.zeros_like(query.logits)
        if pos["enabled"]:
            cache = self.pos_cache if positive is None else positive
            out += pos["alpha"] * cache.class_logits(query.feature, pos["beta"])
        if neg["enabled"]:
            out -= neg["alpha"] * self.neg_cache.masked_logits(query.feature, neg["beta"], *neg["mask"])
        return out

    def infer(self, features: torch.Tensor, classes: torch.Tensor, scale: float, index: int) -> torch.Tensor:
        query = self.last_query = tda_query(features, classes, scale, self.selection_p)
        self.update(query, classes.shape[0])
        return (query.logits + self.cache_logits(query))[None]
