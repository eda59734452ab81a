"""BoostAdapter: TDA's caches, read with the sample's own most confident views boosting the positive one.

Zhang et al., "BoostAdapter: Improving Vision-Language Test-Time Adaptation via Regional Bootstrapping",
NeurIPS 2024 (official code taolinzhang/BoostAdapter). Per test sample, in stream order, as :class:`TDA` with:

1. the query: on the ImageNet variants TDA's (the mean of the 6 most confident of 64 views); on the fine-grained
   sets the original view alone (``query="original"``), the 63 random crops serving only the boosting;
2. boosting: the 10% of the views of lowest entropy (each its own feature and entropy, regional bootstrap
   samples) enter a copy of the positive cache, under their own predicted class, with ``delta`` more slots a
   class; the copy is read for this sample and dropped, so boosting entries never persist;
3. the negative cache keeps the last 2 entries a class (first in, first out), where TDA keeps the 2 of lowest
   entropy: what the official code does (its ``update_cache`` default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..errors import ConfigError
from ..learners import PromptLearner
from ..registry import ADAPTERS
from .base import confident_views, view_entropy
from .cache import ClassCache
from .tda import TDA, tda_query

__all__ = ["BoostAdapter"]


@ADAPTERS.register_module(name="boostadapter")
class BoostAdapter(TDA):
    """BoostAdapter (Zhang et al., NeurIPS 2024): TDA plus the sample's confident views in its positive cache.

    Args:
        learner, shape, positive, negative, selection_p: as :class:`TDA` (``selection_p`` also picks the boosting
            views).
        delta: the extra slots a class of the boosted positive cache (the official per-dataset values: configs).
        query: ``"confident"`` (TDA's query) or ``"original"`` (view 0's feature and prediction).
    """

    method = "boostadapter"

    def __init__(self, learner: PromptLearner | None, *, shape: tuple[int, int] | None = None,
                 positive: Mapping[str, Any] | None = None, negative: Mapping[str, Any] | None = None,
                 selection_p: float = 0.1, delta: int = 3, query: str = "confident") -> None:
        if not isinstance(delta, int) or isinstance(delta, bool) or delta < 0:
            raise ConfigError(f"BoostAdapter: delta must be an int >= 0, got {delta!r}")
        if query not in ("confident", "original"):
            raise ConfigError(f"BoostAdapter: query must be 'confident' or 'original', got {query!r}")
        super().__init__(learner, shape=shape, positive=positive, negative=negative, selection_p=selection_p)
        self.delta, self.query = delta, query
        self.neg_cache.fifo = True
        #: the boosted positive cache the last sample was read with
        self.last_boosted: ClassCache | None = None

    def boosted_cache(self, features: torch.Tensor, logits: torch.Tensor) -> ClassCache:
        """The positive cache with ``delta`` more slots a class and the sample's most confident views in it."""
        boosted = self.pos_cache.widened(self.positive["capacity"] + self.delta)
        if features.shape[0] > 1:
            kept = confident_views(logits, self.selection_p)
            for view, entropy in zip(kept.tolist(), view_entropy(logits[kept]), strict=True):
                boosted.admit(int(logits[view].argmax()), features[view], entropy)
        return boosted

    def infer(self, features: torch.Tensor, classes: torch.Tensor, scale: float, index: int) -> torch.Tensor:
        source = features[:1] if self.query == "original" else features
        query = self.last_query = tda_query(source, classes, scale, self.selection_p)
        self.update(query, classes.shape[0])
        self.last_boosted = self.boosted_cache(features, scale * features @ classes.t())
        return (query.logits + self.cache_logits(query, self.last_boosted))[None]
