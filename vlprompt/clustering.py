"""Nearest-centre distances, k-means++ seeding and k-means on faiss: shared by active learning and GRAM.

A low-level module (numpy, torch and faiss only). faiss-gpu is used when installed and a GPU is
visible, faiss-cpu otherwise. :func:`torch_kmeans` is the plain torch reference the benchmarks time
:func:`faiss_kmeans` against.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = ["faiss_kmeans", "kmeanspp", "kmeanspp_from", "nearest_squared", "squared_distances_to", "torch_kmeans"]

KMEANS_INITS = ("kmeans++", "random")


def _faiss():
    import faiss

    return faiss


def nearest_squared(centres: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Squared L2 distance from each point to its nearest centre (a faiss flat index over the centres)."""
    faiss = _faiss()
    index = faiss.IndexFlatL2(centres.shape[1])
    index.add(np.ascontiguousarray(centres, dtype=np.float32))
    dist, _ = index.search(np.ascontiguousarray(points, dtype=np.float32), 1)
    return np.maximum(dist[:, 0], 0.0)


def squared_distances_to(points: np.ndarray) -> Callable[[int], np.ndarray]:
    """``j -> |x_i - x_j|^2`` for every point ``i`` (clamped at 0), the squared norms computed once."""
    norms = (points.astype(np.float32) ** 2).sum(1)

    def to(j: int) -> np.ndarray:
        return np.maximum(norms - 2.0 * (points @ points[j]) + norms[j], 0.0)
    return to


def _d2_sample(min_d2: np.ndarray, taken: np.ndarray, rng: np.random.Generator) -> int:
    """An index drawn with probability proportional to ``min_d2`` among those not taken; uniform
    among them when every distance is zero (duplicates only)."""
    weights = np.where(taken, 0.0, np.maximum(min_d2, 0.0).astype(np.float64))
    total = weights.sum()
    if not total > 0:
        free = np.flatnonzero(~taken)
        return int(rng.choice(free))
    return int(rng.choice(len(weights), p=weights / total))


def kmeanspp_from(n_points: int, n: int, first: int, distances_to: Callable[[int], np.ndarray],
                  rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding given the first centre and each point's squared distances to a point."""
    n = min(int(n), n_points)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    taken = np.zeros(n_points, dtype=bool)
    picks = [first]
    taken[first] = True
    min_d2 = np.maximum(distances_to(first), 0.0)
    while len(picks) < n:
        pick = _d2_sample(min_d2, taken, rng)
        picks.append(pick)
        taken[pick] = True
        np.minimum(min_d2, np.maximum(distances_to(pick), 0.0), out=min_d2)
    return np.asarray(picks, dtype=np.int64)


def kmeanspp(points: np.ndarray, n: int, rng: np.random.Generator, first: int | None = None) -> np.ndarray:
    """k-means++ seeding of ``n`` distinct points; the first is ``first``, by default the point of
    largest norm (as in BADGE)."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    first = int(np.argmax((points ** 2).sum(1))) if first is None else int(first)
    return kmeanspp_from(len(points), n, first, squared_distances_to(points), rng)


def faiss_kmeans(x: np.ndarray, k: int, iterations: int = 20, seed: int = 1, spherical: bool = True,
                 init: str = "kmeans++", gpu: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(centroids (k, d), assignment (n,))`` by faiss k-means on all points (no subsampling).

    ``init="kmeans++"`` seeds with :func:`kmeanspp` (first centre drawn with ``seed``), which finds
    separated clusters that faiss's own random seeding (``init="random"``) often merges. The result is
    a function of ``x``, ``k`` and ``seed``.
    """
    faiss = _faiss()
    if init not in KMEANS_INITS:
        raise ValueError(f"k-means init must be one of {KMEANS_INITS}, got {init!r}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not 1 <= k <= len(x):
        raise ValueError(f"k-means: cannot make {k} clusters of {len(x)} points")
    use_gpu = (faiss.get_num_gpus() > 0) if gpu is None else gpu
    km = faiss.Kmeans(x.shape[1], k, niter=iterations, seed=seed, spherical=spherical, gpu=bool(use_gpu),
                      max_points_per_centroid=max(256, -(-len(x) // k)), min_points_per_centroid=1, verbose=False)
    start = None
    if init == "kmeans++":
        rng = np.random.default_rng(seed)
        start = x[kmeanspp(x, k, rng, first=int(rng.integers(len(x))))]
    km.train(x, init_centroids=start)
    _, assign = km.index.search(x, 1)
    return km.centroids.copy(), assign[:, 0].astype(np.int64)


def torch_kmeans(x: torch.Tensor, k: int, iterations: int = 20, seed: int = 1,
                 init_centroids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain Lloyd k-means in torch, one matrix product per step; the first centroids are
    ``init_centroids`` or ``k`` random points."""
    if init_centroids is not None:
        centroids = init_centroids.to(x).clone()
    else:
        generator = torch.Generator().manual_seed(seed)
        centroids = x[torch.randperm(len(x), generator=generator)[:k].to(x.device)].clone()

    def nearest(c: torch.Tensor) -> torch.Tensor:
        return (x @ c.t() - 0.5 * c.pow(2).sum(1)).argmax(1)  # argmax == the nearest centroid

    for _ in range(iterations):
        assign = nearest(centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1).to(x.dtype)
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
    return centroids, nearest(centroids)
