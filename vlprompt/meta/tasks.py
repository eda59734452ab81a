"""GRAM's meta-training tasks from unlabelled image-text pairs (reimplemented from the paper).

1. :func:`~vlprompt.meta.features.encode_pairs` (:mod:`vlprompt.meta.features`): the pairs' frozen CLIP
   embeddings, computed in one streaming pass and cached on disk.
2. :func:`cross_modal_hierarchy`: faiss k-means over the pairs' cross-modal embeddings, coarse clusters
   as *domains*, then inside each domain fine clusters as *pseudo-classes*, each named by the caption of
   the pair nearest its centroid.
3. :class:`TaskSampler`: N-way K-shot support / query tasks drawn inside one domain.

The paper names the cross-modal hierarchical clustering but not its details; every choice made here
is a setting (see :class:`ClusterSettings` and :class:`TaskSettings`) and is listed in the README.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..clustering import faiss_kmeans
from ..errors import UserError
from .features import PairFeatures

CLUSTER_FEATURES = ("image", "text", "joint")


class TaskConstructionError(UserError, ValueError):
    """The clustering left too few usable domains or pseudo-classes for the requested tasks."""


# ---------------------------------------------------------------------------------------- clustering
@dataclass
class ClusterSettings:
    """The cross-modal hierarchical clustering (design choices the paper leaves open).

    Args:
        domains: coarse clusters (meta-training domains).
        classes_per_domain: fine clusters inside each domain (pseudo-classes); fewer when a domain is small.
        coarse_on / fine_on: the embedding each level clusters: ``image``, ``text`` or ``joint``
            (``[image, text] / sqrt(2)``, both modalities at once: the default for both levels).
        iterations: k-means iterations per level.
        init: k-means seeding, ``kmeans++`` or ``random`` (faiss's own).
        naming: a pseudo-class's name in the prompts: ``phrase``, the most distinctive word n-gram of its
            captions (:func:`distinctive_phrases`: short, like a class name), or ``caption``, the caption
            of the pair nearest its centroid.
        seed: k-means seed (the hierarchy is a function of the features and this seed).
    """

    domains: int = 4
    classes_per_domain: int = 12
    coarse_on: str = "joint"
    fine_on: str = "joint"
    iterations: int = 20
    init: str = "kmeans++"
    naming: str = "phrase"
    seed: int = 1

    def __post_init__(self) -> None:
        for key in ("coarse_on", "fine_on"):
            if getattr(self, key) not in CLUSTER_FEATURES:
                raise ValueError(f"clustering.{key} must be one of {CLUSTER_FEATURES}, got {getattr(self, key)!r}")
        if self.naming not in NAMINGS:
            raise ValueError(f"clustering.naming must be one of {NAMINGS}, got {self.naming!r}")
        if self.domains < 2:
            raise ValueError(f"clustering.domains must be >= 2 (queries come from another domain), got {self.domains}")
        if self.classes_per_domain < 2:
            raise ValueError(f"clustering.classes_per_domain must be >= 2, got {self.classes_per_domain}")


@dataclass
class Hierarchy:
    """Domain and pseudo-class of every pair; pseudo-class ``c`` lies in domain ``class_domain[c]``."""

    domain: np.ndarray  # (N,)
    pseudo_class: np.ndarray  # (N,) global pseudo-class ids
    class_domain: np.ndarray  # (C,)
    class_names: list[str]  # (C,) each pseudo-class's name (ClusterSettings.naming)

    def summary(self) -> dict[str, Any]:
        sizes = np.bincount(self.pseudo_class, minlength=len(self.class_names))
        return {"domains": int(self.class_domain.max()) + 1, "pseudo_classes": len(self.class_names),
                "domain_sizes": np.bincount(self.domain).tolist(),
                "class_size_min": int(sizes.min()), "class_size_max": int(sizes.max())}


def _embedding(features: PairFeatures, which: str) -> np.ndarray:
    x = {"image": features.image, "text": features.text}.get(which)
    return (features.joint() if x is None else x).numpy()


def _class_name(caption: str) -> str:
    return caption.strip().rstrip(".!?;:, ").strip() or caption.strip()


# words a class name neither starts nor ends with
_FUNCTION_WORDS = frozenset(
    "a an the of in on at to for with and or by from into onto over under near next beside is are was were be "
    "there this that these those it its his her their our my your as which who".split())
NAMINGS = ("phrase", "caption")


def _phrases(caption: str, longest: int = 3) -> set[tuple[str, ...]]:
    words = [w.strip(".,;:!?\"'()[]").lower() for w in caption.split()]
    words = [w for w in words if w]
    return {tuple(words[i:i + n]) for n in range(1, longest + 1) for i in range(len(words) - n + 1)
            if words[i] not in _FUNCTION_WORDS and words[i + n - 1] not in _FUNCTION_WORDS}


def distinctive_phrases(groups: Sequence[Sequence[str]], longest: int = 3,
                        domains: Sequence[int] | None = None) -> list[str]:
    """A short name for each group of captions: its most distinctive word n-gram (n <= ``longest``).

    A phrase scores its share of the group's captions times its inverse frequency over the groups
    (``log(1 + G / groups containing it)``) times ``sqrt(n)``; phrases that start or end with a function
    word are not names. Groups of one domain (``domains``) get distinct names: a group whose best phrase
    is taken there gets its next best (groups named in the order of their best score). A group without
    a free phrase keeps its first caption. Ties: the first in sorted order.
    """
    counts = [Counter(p for c in group for p in _phrases(c, longest)) for group in groups]
    spread = Counter(p for count in counts for p in count)
    ranked = []
    for group, count in zip(groups, counts, strict=True):
        score = {p: n / len(group) * math.log(1 + len(groups) / spread[p]) * math.sqrt(len(p))
                 for p, n in count.items()}
        ranked.append(sorted(score.items(), key=lambda item: (-item[1], item[0])))
    domains = list(domains) if domains is not None else [0] * len(groups)
    names: list[str] = [""] * len(groups)
    taken: set[tuple[int, tuple[str, ...]]] = set()
    for g in sorted(range(len(groups)), key=lambda g: -(ranked[g][0][1] if ranked[g] else 0.0)):
        free = next((p for p, _ in ranked[g] if (domains[g], p) not in taken), None)
        if free is None:
            names[g] = _class_name(groups[g][0]) if groups[g] else f"group {g}"
            continue
        taken.add((domains[g], free))
        names[g] = " ".join(free)
    return names


def cross_modal_hierarchy(features: PairFeatures, settings: ClusterSettings) -> Hierarchy:
    """Domains by k-means on ``coarse_on``, then pseudo-classes by k-means on ``fine_on`` in each domain."""
    coarse = _embedding(features, settings.coarse_on)
    fine = _embedding(features, settings.fine_on)
    _, domain = faiss_kmeans(coarse, settings.domains, settings.iterations, settings.seed, init=settings.init)
    pseudo = np.full(len(features), -1, dtype=np.int64)
    class_domain: list[int] = []
    names: list[str] = []
    groups: list[list[str]] = []
    for d in range(settings.domains):
        members = np.flatnonzero(domain == d)
        k = min(settings.classes_per_domain, len(members))
        if k < 1:
            continue
        seed = settings.seed + 1 + d
        centroids, assign = faiss_kmeans(fine[members], k, settings.iterations, seed, init=settings.init)
        for c in range(k):
            inside = members[assign == c]
            if len(inside) == 0:
                continue
            nearest = inside[int(np.argmax(fine[inside] @ centroids[c]))]
            pseudo[inside] = len(names)
            class_domain.append(d)
            names.append(_class_name(features.captions[nearest]))
            groups.append([features.captions[i] for i in inside])
    if settings.naming == "phrase":
        names = distinctive_phrases(groups, domains=class_domain)
    return Hierarchy(domain, pseudo, np.asarray(class_domain, dtype=np.int64), names)


# ------------------------------------------------------------------------------------------- tasks
@dataclass
class TaskSettings:
    """N-way K-shot tasks: ``n_way`` pseudo-classes of one domain, ``k_shot`` support and ``q_query``
    query pairs each (a pseudo-class with fewer than ``k_shot + q_query`` pairs is never drawn)."""

    n_way: int = 5
    k_shot: int = 4
    q_query: int = 8

    def __post_init__(self) -> None:
        for key in ("n_way", "k_shot", "q_query"):
            if getattr(self, key) < 1:
                raise ValueError(f"tasks.{key} must be >= 1, got {getattr(self, key)}")
        if self.n_way < 2:
            raise ValueError(f"tasks.n_way must be >= 2 (a 1-way task has nothing to learn), got {self.n_way}")


@dataclass
class Task:
    """One N-way task: pair indices and labels (0..N-1) of its support and query sets, and its class names."""

    domain: int
    class_names: list[str]
    support: np.ndarray
    support_labels: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray


class TaskSampler:
    """Draws :class:`Task` s inside a domain; :meth:`episode` gives a task and a query task from another domain."""

    def __init__(self, hierarchy: Hierarchy, settings: TaskSettings) -> None:
        self.hierarchy, self.settings = hierarchy, settings
        need = settings.k_shot + settings.q_query
        sizes = np.bincount(hierarchy.pseudo_class[hierarchy.pseudo_class >= 0], minlength=len(hierarchy.class_names))
        self.members = {c: np.flatnonzero(hierarchy.pseudo_class == c) for c in np.flatnonzero(sizes >= need)}
        by_domain: dict[int, list[int]] = {}
        for c in self.members:
            by_domain.setdefault(int(hierarchy.class_domain[c]), []).append(int(c))
        self.domain_classes = {d: cs for d, cs in sorted(by_domain.items()) if len(cs) >= settings.n_way}
        if len(self.domain_classes) < 2:
            raise TaskConstructionError(
                f"only {len(self.domain_classes)} domain(s) have {settings.n_way} pseudo-classes of >= {need} pairs "
                f"(k_shot={settings.k_shot} + q_query={settings.q_query}); cross-domain queries need 2: use more "
                f"pairs, fewer clustering.domains / classes_per_domain, or smaller tasks (cluster sizes "
                f"{hierarchy.summary()})")
        self.domains = list(self.domain_classes)

    def task(self, rng: np.random.Generator, domain: int | None = None) -> Task:
        """An N-way task of ``domain`` (a random usable one by default)."""
        s = self.settings
        if domain is None:
            domain = self.domains[int(rng.integers(len(self.domains)))]
        classes = rng.choice(self.domain_classes[domain], size=s.n_way, replace=False)
        support, query = [], []
        for c in classes:
            picked = rng.choice(self.members[int(c)], size=s.k_shot + s.q_query, replace=False)
            support.append(picked[: s.k_shot])
            query.append(picked[s.k_shot:])
        labels = np.arange(s.n_way)
        return Task(int(domain), [self.hierarchy.class_names[int(c)] for c in classes],
                    np.concatenate(support), np.repeat(labels, s.k_shot), np.concatenate(query),
                    np.repeat(labels, s.q_query))

    def episode(self, rng: np.random.Generator) -> tuple[Task, Task]:
        """A task and a second task from a different domain (GRAM's cross-domain outer loss)."""
        first = self.domains[int(rng.integers(len(self.domains)))]
        others = [d for d in self.domains if d != first]
        return self.task(rng, first), self.task(rng, others[int(rng.integers(len(others)))])
