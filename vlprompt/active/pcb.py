"""PCB: fill the labelled set towards class balance from a sampler's candidates.

Bang, Ahn and Lee, "Active Prompt Learning in Vision Language Models", CVPR 2024 (official code
kaist-dmlab/pcb, ``trainers/active_learning/pcb.py``). A pre-trained vision-language model's
uncertainty and diversity samplers pick class-imbalanced sets; PCB pseudo-labels the candidates
they propose with the current prompted CLIP and, one image at a time, labels a random candidate
whose pseudo-label is the class least represented so far (the labelled set's true labels, plus
the pseudo-labels of what this round has already picked).

When no unpicked candidate carries the least represented class, the official code picks a random
candidate and leaves the counts as they are, so that class stays the least represented and every
later pick of the round is random (``exhausted="random"``, the default, as published). The
labelled alternative ``exhausted="next"`` moves on to the next least represented class that still
has candidates, random only when none has.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EXHAUSTED", "balance_entropy", "class_histogram", "pcb_select"]

EXHAUSTED = ("random", "next")


def class_histogram(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Images per class (``num_classes`` bins)."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]


def balance_entropy(labels: np.ndarray, num_classes: int) -> float:
    """Entropy of the label histogram over its maximum ``log C`` (1: perfectly balanced, 0: one class)."""
    counts = class_histogram(labels, num_classes).astype(np.float64)
    if counts.sum() == 0 or num_classes < 2:
        return 0.0
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(num_classes))


def pcb_select(candidates: np.ndarray, pseudo_labels: np.ndarray, counts: np.ndarray, n: int,
               rng: np.random.Generator, exhausted: str = "random") -> np.ndarray:
    """``n`` of ``candidates`` (pool indices), balancing classes greedily.

    Args:
        candidates: pool indices proposed by a sampler.
        pseudo_labels: the current model's predicted class of each candidate (same order).
        counts: labelled images per class so far (true labels); not modified.
        n: how many to pick (at most ``len(candidates)``).
        rng: the round's generator (random picks among a class's candidates, and the fallback).
        exhausted: ``"random"`` (official) or ``"next"``; see the module docstring.
    """
    if exhausted not in EXHAUSTED:
        raise ValueError(f"exhausted must be one of {EXHAUSTED}, got {exhausted!r}")
    candidates = np.asarray(candidates, dtype=np.int64)
    pseudo_labels = np.asarray(pseudo_labels, dtype=np.int64)
    if len(candidates) != len(pseudo_labels):
        raise ValueError(f"{len(candidates)} candidates but {len(pseudo_labels)} pseudo-labels")
    counts = np.asarray(counts, dtype=np.int64).copy()
    n = min(int(n), len(candidates))
    free = np.ones(len(candidates), dtype=bool)
    picks: list[int] = []
    while len(picks) < n:
        order = [int(np.argmin(counts))] if exhausted == "random" else \
            [int(c) for c in np.argsort(counts, kind="stable")]
        for cls in order:
            members = np.flatnonzero(free & (pseudo_labels == cls))
            if len(members):
                pick = int(rng.choice(members))
                counts[cls] += 1
                break
        else:  # the least represented class (every class, for "next") has no candidate left
            pick = int(rng.choice(np.flatnonzero(free)))
        free[pick] = False
        picks.append(pick)
    return candidates[np.asarray(picks, dtype=np.int64)]
