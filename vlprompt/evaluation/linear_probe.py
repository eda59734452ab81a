"""Logistic-regression probe on frozen features: how much a task's image features already know.

The gap between a linear probe and zero-shot accuracy is the headroom a prompt learner can
reach for. The weight decay is chosen on a validation split, as in CLIP's linear-probe protocol
(there with scikit-learn's L-BFGS; here full-batch L-BFGS in torch).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

DEFAULT_WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


def fit_linear_probe(
    feats: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float, max_iter: int = 300
) -> torch.nn.Linear:
    """A linear classifier trained to convergence on ``feats`` (full batch, L-BFGS)."""
    torch.manual_seed(0)
    head = torch.nn.Linear(feats.shape[1], num_classes)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")
    scale = 1.0 / feats.std().clamp_min(1e-6)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(head(feats * scale), labels) + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():  # fold the input scaling into the weights
        head.weight.mul_(scale)
    return head


def probe_accuracy(head: torch.nn.Linear, feats: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 (%) of a fitted probe on ``feats``."""
    with torch.no_grad():
        return (head(feats).argmax(-1) == labels).float().mean().item() * 100


def train_linear_probe(
    train: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    desc: str | None = None,
) -> tuple[torch.nn.Linear, float]:
    """The probe fitted on ``train`` with the weight decay that did best on ``val`` (``train`` when
    there is no val), and that decay. Fit once, it can be tested on every test set with the training
    set's classes (a dataset and its domains). ``desc``: show the search as a progress bar."""
    from tqdm import tqdm

    val = val if val is not None and len(val[1]) else train
    search = tqdm(weight_decays, desc=desc, unit="decay", leave=False, disable=desc is None)
    best = max(search, key=lambda wd: probe_accuracy(fit_linear_probe(*train, num_classes, wd), *val))
    return fit_linear_probe(*train, num_classes, best), best


def linear_probe_accuracy(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    desc: str | None = None,
) -> tuple[float, float]:
    """Top-1 (%) on ``test`` of the probe whose weight decay did best on ``val``; and that decay
    (:func:`train_linear_probe`, then :func:`probe_accuracy`).
    ``desc``: show the weight-decay search as a progress bar with this label."""
    head, best = train_linear_probe(train, num_classes, val, weight_decays, desc)
    return probe_accuracy(head, *test), best
