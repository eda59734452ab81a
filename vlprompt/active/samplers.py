"""Active-learning samplers: which unlabelled images to propose for labelling.

Each sampler sees a :class:`Pool` (the normalised image features and the current model's class
probabilities of every pool image, computed once per round) and returns pool indices, most wanted
first. They are registered by name (:func:`register_sampler`); a config names one of
:data:`SAMPLERS` and nothing else is called. Distances run on faiss (``faiss-gpu`` when installed,
``faiss-cpu`` otherwise): the labelled-to-pool nearest distances through a flat L2 index, which
never materialises the labelled x pool matrix; each greedy step's distances to the newest centre
are one matrix-vector product with the squared norms precomputed (2.5x faster than
``faiss.pairwise_distances`` and 13x faster than ``torch.cdist`` for one centre against 100k x 512
on one core). :func:`k_center_greedy_torch` and :func:`kmeanspp_torch` are
the plain torch versions the benchmark compares against (``benchmarks/bench_active_select.py``).

As in the official PCB code (kaist-dmlab/pcb, ``trainers/active_learning/``):

* ``entropy``: the highest prediction entropy first (Shannon entropy of the softmax, ``log(p + 1e-6)``);
* ``coreset``: k-centre greedy on the L2 distance between normalised image features, the labelled
  set as the initial centres;
* ``badge``: k-means++ seeding on gradient embeddings ``g_i = (onehot(argmax p_i) - p_i) (x) f_i``,
  the first centre the embedding of largest norm, then sampling proportional to the squared
  distance to the nearest centre. The distances come from the factorisation
  ``|g_i - g_j|^2 = |a_i|^2 |f_i|^2 + |a_j|^2 |f_j|^2 - 2 (a_i . a_j)(f_i . f_j)`` with
  ``a = onehot - p``, so the ``C x D``-dimensional embeddings are never built (the official code
  holds them densely: 52k floats per image for 102 classes).
* ``random``: uniform without replacement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..clustering import kmeanspp, kmeanspp_from, nearest_squared, squared_distances_to
from ..registry import SAMPLERS

__all__ = ["SAMPLERS", "Pool", "badge", "coreset", "entropy", "gradient_embedding_norms", "k_center_greedy",
           "k_center_greedy_torch", "kmeanspp", "kmeanspp_torch", "prediction_entropy", "random_sampler",
           "register_sampler", "sampler"]


@dataclass
class Pool:
    """What a sampler may look at, for every image of the pool (labelled or not).

    Attributes:
        features: ``(N, D)`` float32 normalised image features.
        probs: ``(N, C)`` float32 class probabilities of the current prompted model.
        labelled: pool indices already labelled (the initial centres of coreset).
        unlabelled: pool indices that may be proposed, ascending.
    """

    features: np.ndarray
    probs: np.ndarray
    labelled: np.ndarray
    unlabelled: np.ndarray

    def __post_init__(self) -> None:
        self.features = np.ascontiguousarray(self.features, dtype=np.float32)
        self.probs = np.ascontiguousarray(self.probs, dtype=np.float32)
        self.labelled = np.asarray(self.labelled, dtype=np.int64)
        self.unlabelled = np.asarray(self.unlabelled, dtype=np.int64)
        if len(self.features) != len(self.probs):
            raise ValueError(f"pool features ({len(self.features)}) and probabilities ({len(self.probs)}) "
                             "differ in length")

    @property
    def pseudo_labels(self) -> np.ndarray:
        """The model's predicted class of every pool image."""
        return self.probs.argmax(axis=1)


Sampler = Callable[[Pool, int, np.random.Generator], np.ndarray]


def register_sampler(name: str) -> Callable[[Sampler], Sampler]:
    """Register ``fn(pool, n, rng) -> pool indices`` as the sampler ``name`` (in :data:`SAMPLERS`)."""
    return SAMPLERS.register_module(name=name, force=True)


def sampler(name: str) -> Sampler:
    """The sampler registered as ``name``; an unknown name is an error listing the known ones."""
    try:
        return SAMPLERS.module_dict[name]
    except KeyError:
        raise KeyError(f"unknown active-learning sampler {name!r}; known: {', '.join(SAMPLERS.module_dict)}") from None


def _check_n(pool: Pool, n: int) -> int:
    if n < 0:
        raise ValueError(f"cannot select {n} images")
    return min(int(n), len(pool.unlabelled))


# ---------------------------------------------------------------------------------------- random, entropy
@register_sampler("random")
def random_sampler(pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` unlabelled images uniformly at random."""
    return rng.choice(pool.unlabelled, size=_check_n(pool, n), replace=False)


def prediction_entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row, with the official code's ``log(p + 1e-6)``."""
    return -(probs * np.log(probs + 1e-6)).sum(axis=1)


@register_sampler("entropy")
def entropy(pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
    """The ``n`` unlabelled images of highest prediction entropy (ties: lower pool index first)."""
    n = _check_n(pool, n)
    scores = prediction_entropy(pool.probs[pool.unlabelled])
    order = np.argsort(-scores, kind="stable")[:n]
    return pool.unlabelled[order]


# ---------------------------------------------------------------------------------------- coreset
def k_center_greedy(points: np.ndarray, centres: np.ndarray, n: int) -> np.ndarray:
    """Indices into ``points`` of ``n`` k-centre greedy picks: each the point farthest from its
    nearest centre so far (``centres``, then the earlier picks). With no centre the first pick is
    the point of largest norm, so the result does not depend on the points' order."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    n = min(int(n), len(points))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    no_centre = np.full(len(points), np.inf, dtype=np.float32)
    min_d = nearest_squared(centres, points) if len(centres) else no_centre
    picks = np.empty(n, dtype=np.int64)
    squared_distances = squared_distances_to(points)
    for i in range(n):
        pick = int(np.argmax(min_d)) if np.isfinite(min_d).any() else int(np.argmax((points ** 2).sum(1)))
        picks[i] = pick
        np.minimum(min_d, squared_distances(pick), out=min_d)
        min_d[pick] = -1.0  # never again (a duplicate image is at distance 0, not below it)
    return picks


@register_sampler("coreset")
def coreset(pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
    """k-centre greedy over the unlabelled features, the labelled images as the first centres."""
    n = _check_n(pool, n)
    picks = k_center_greedy(pool.features[pool.unlabelled], pool.features[pool.labelled], n)
    return pool.unlabelled[picks]


def k_center_greedy_torch(points: torch.Tensor, centres: torch.Tensor, n: int) -> torch.Tensor:
    """The plain torch k-centre greedy (``torch.cdist``, as the official code), for the benchmark."""
    min_d = torch.full((len(points),), float("inf"))
    for start in range(0, len(centres), 1024):
        d = torch.cdist(centres[start:start + 1024], points).min(0).values
        min_d = torch.minimum(min_d, d)
    picks = []
    for _ in range(min(n, len(points))):
        pick = int(torch.argmax(min_d))
        picks.append(pick)
        min_d = torch.minimum(min_d, torch.cdist(points[pick:pick + 1], points)[0])
        min_d[pick] = -1.0
    return torch.tensor(picks, dtype=torch.long)


# ---------------------------------------------------------------------------------------- k-means++ / BADGE
def kmeanspp_torch(points: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """The plain torch k-means++ seeding (``torch.cdist`` and ``torch.multinomial``), for the benchmark."""
    first = int(torch.argmax((points ** 2).sum(1)))
    picks = [first]
    min_d2 = torch.cdist(points[first:first + 1], points)[0] ** 2
    min_d2[first] = 0.0
    while len(picks) < min(n, len(points)):
        pick = int(torch.multinomial(min_d2.clamp_min(0.0), 1, generator=generator))
        picks.append(pick)
        min_d2 = torch.minimum(min_d2, torch.cdist(points[pick:pick + 1], points)[0] ** 2)
        min_d2[pick] = 0.0
    return torch.tensor(picks, dtype=torch.long)


def _badge_factors(features: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``a = onehot(argmax p) - p`` of each image (the class factor of its gradient embedding)."""
    a = -probs.astype(np.float32)
    a[np.arange(len(a)), probs.argmax(1)] += 1.0
    return a


def gradient_embedding_norms(features: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Squared norms ``|a_i|^2 |f_i|^2`` of BADGE's gradient embeddings, without building them."""
    a = _badge_factors(features, probs)
    return (a ** 2).sum(1) * (features.astype(np.float32) ** 2).sum(1)


@register_sampler("badge")
def badge(pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on the gradient embeddings of the unlabelled images."""
    n = _check_n(pool, n)
    f = pool.features[pool.unlabelled]
    a = _badge_factors(f, pool.probs[pool.unlabelled])
    norms = (a ** 2).sum(1) * (f ** 2).sum(1)

    def distances_to(j: int) -> np.ndarray:
        return norms + norms[j] - 2.0 * (a @ a[j]) * (f @ f[j])

    picks = kmeanspp_from(len(f), n, int(np.argmax(norms)), distances_to, rng)
    return pool.unlabelled[picks]
