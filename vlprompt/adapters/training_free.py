"""Test-time adapters that tune nothing: ZERO and MTA read a sample's prediction from its views' features.

Each sample's views (:class:`~vlprompt.adapters.TPTViews`, view 0 the original) go once through the
learner's image tower, without gradients; the class features are the learner's (the zero-shot prompt, or
a trained CoOp / KgCoOp / MaPLe ... from ``--checkpoint``), computed once (per sample for image-conditioned
learners such as CoCoOp). A method turns the normalised view features ``(V, E)``, the class features
``(C, E)`` and the logit scale into the sample's logits ``(1, C)``.

Both methods are episodic: nothing carries from one sample to the next, so a sample's prediction does
not depend on the order of the stream, and a sharded run equals one process.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..learners import PromptLearner
from ..registry import ADAPTERS
from .base import check_views, confident_views

__all__ = ["MTA", "ZERO", "TrainingFreeAdapter", "mta_mode", "zero_votes"]


class TrainingFreeAdapter:
    """The shared loop of adapters that tune nothing (subclasses give :meth:`infer`).

    Args:
        learner: gives the class features and the image tower (frozen while the adapter uses it).
        shape: ``(classes, dim)`` of an adapter without a learner, which only :meth:`infer` works on.
    """

    #: registry name (``ADAPTERS``)
    method: ClassVar[str] = ""
    #: optimiser steps per sample: none (tools read it beside the tuning adapters')
    steps: ClassVar[int] = 0
    #: nothing carries from sample to sample (:mod:`vlprompt.adapters.run` saves no state)
    keeps_state: ClassVar[bool] = False

    def __init__(self, learner: PromptLearner | None, shape: tuple[int, int] | None = None) -> None:
        """``learner=None`` with ``shape=(classes, dim)``: an adapter of features only (:meth:`infer`; the
        fidelity tests feed it the official code's inputs)."""
        if learner is None:
            if shape is None:
                raise TypeError(f"{type(self).__name__}: give a learner, or shape=(classes, dim) to work on features")
            self.shape = tuple(shape)
        elif not isinstance(learner, PromptLearner):
            raise TypeError(f"{type(self).__name__}: learner must be a PromptLearner, got {type(learner).__name__}")
        else:
            self.shape = (len(learner.class_names), learner.backbone.embed_dim)
            for p in learner.parameters():
                p.requires_grad_(False)
            learner.eval()
        self.learner = learner
        self._classes: torch.Tensor | None = None
        #: samples predicted so far (the default sample index of error messages)
        self.samples_seen = 0

    @property
    def device(self) -> torch.device:
        return self.learner.device if self.learner is not None else torch.device("cpu")

    def carried_state(self) -> dict[str, torch.Tensor]:
        """Nothing carries between samples."""
        return {}

    def load_carried_state(self, state: dict[str, torch.Tensor]) -> None:
        """Nothing to load (see :meth:`carried_state`)."""

    def restart(self) -> None:
        """Back to the state at construction."""
        self.samples_seen = 0

    def selects_views(self, n_views: int) -> bool:
        """Whether a sample of ``n_views`` views is cut to its most confident ones (``selection_p``)."""
        return hasattr(self, "selection_p")

    def class_features(self, view_features: torch.Tensor) -> torch.Tensor:
        """Normalised class features ``(C, E)``: once for the run, or per sample for an image-conditioned
        learner (conditioned on view 0, as the tuning adapters do)."""
        if self.learner.image_conditioned_text:
            return self.learner.encode_classes(view_features[:1])[0]
        if self._classes is None:
            self._classes = self.learner.encode_classes()
        return self._classes

    def infer(self, features: torch.Tensor, classes: torch.Tensor, scale: float, index: int) -> torch.Tensor:
        """The sample's logits ``(1, C)`` from its normalised view features ``(V, E)`` (view 0 the original),
        the class features ``(C, E)`` and the logit scale (subclasses)."""
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, views: torch.Tensor, index: int | None = None) -> torch.Tensor:
        """Encode one sample's views and return its logits ``(1, C)``; ``index`` names it in error messages."""
        views = check_views(views, type(self).__name__, self.device)
        index = self.samples_seen if index is None else index
        features = self.learner.encode_images(views).float()
        classes = self.class_features(features).float()
        scale = float(self.learner.cosine_scale())  # CLIP-LoRA's and Tip-Adapter's fixed 100, else the backbone's
        try:
            return self.infer(features, classes, scale, index)
        finally:
            self.samples_seen += 1


def probabilities_as_logits(probs: torch.Tensor) -> torch.Tensor:
    """Logits ``(1, C)`` whose softmax is ``probs`` ``(C,)`` (summing to 1): their log, zeros kept finite."""
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()[None]


# ------------------------------------------------------------------------------------------ ZERO
def zero_votes(features: torch.Tensor, classes: torch.Tensor, scale: float, fraction: float = 0.3
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """ZERO's votes ``(C,)`` and the kept views: the ``int(V * fraction)`` views of lowest entropy (of the
    softmax of the scaled cosines) each vote for their top class; a tie between classes goes to the first
    tied class that a dropped view predicts, those views taken from the most confident down (+1 vote)."""
    cosines = features @ classes.t()
    kept = confident_views(scale * cosines, fraction)
    votes = F.one_hot(cosines[kept].argmax(dim=-1), cosines.shape[1]).sum(dim=0).to(cosines.dtype)
    tied = (votes == votes.max()).nonzero().flatten()
    if len(tied) > 1:
        rest = confident_views(scale * cosines, 1.0)[len(kept):]  # the dropped views, most confident first
        tied_classes = set(tied.tolist())
        for choice in cosines[rest].argmax(dim=-1).tolist():
            if choice in tied_classes:
                votes[choice] += 1
                break
        else:  # no dropped view predicts a tied class: the most confident dropped view's pick among them
            pick = tied[cosines[rest[0], tied].argmax()] if len(rest) else tied[0]
            votes[pick] += 1
    return votes, kept


@ADAPTERS.register_module(name="zero")
class ZERO(TrainingFreeAdapter):
    """ZERO (Farina et al., NeurIPS 2024): the vote of the confident views' zero-temperature predictions.

    The logits are the log of the vote shares (the kept views, plus one for a tie-break), so their softmax
    is the share of the confident views that chose each class: the score ECE is measured on.

    Args:
        learner: see :class:`TrainingFreeAdapter`.
        selection_p: the share of views that vote (0.3: 19 of 64).
    """

    method = "zero"

    def __init__(self, learner: PromptLearner, *, selection_p: float = 0.3) -> None:
        if not 0 < selection_p <= 1:
            raise ConfigError(f"ZERO: selection_p must lie in (0, 1], got {selection_p!r}")
        super().__init__(learner)
        self.selection_p = float(selection_p)
        #: the kept views of the last sample
        self.last_selected: torch.Tensor | None = None

    def infer(self, features: torch.Tensor, classes: torch.Tensor, scale: float, index: int) -> torch.Tensor:
        votes, self.last_selected = zero_votes(features, classes, scale, self.selection_p)
        shares = votes / votes.sum()
        return probabilities_as_logits(shares)


# ------------------------------------------------------------------------------------------ MTA
def mta_mode(features: torch.Tensor, classes: torch.Tensor, scale: float, lambda_y: float = 0.2,
             lambda_q: float = 4.0, iterations: int = 5, tolerance: float = 1e-6
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """MTA's mode ``(E,)`` of the views' features and their inlierness weights ``(V,)``.

    Each view has its own Gaussian bandwidth (from its ``int(0.3 (V - 1))`` nearest views); the weights
    maximise kernel density plus ``lambda_q`` times the agreement of the views' predictions, with entropy
    ``lambda_y``; the mode (started at view 0) is the weighted mean shift of the views, kept on the unit
    sphere. ``iterations`` alternations of at most ``iterations`` updates each, each stopped when it moves
    less than ``tolerance``."""
    n = features.shape[0]
    k = int(0.3 * (n - 1))
    if k < 1:
        raise ConfigError(f"MTA needs at least 5 views (int(0.3 x (V - 1)) neighbours per view), got {n}")
    distances = torch.cdist(features, features).sort(dim=1).values[:, 1:k + 1]
    bandwidth = torch.sqrt(0.5 * (distances ** 2).mean(dim=1))
    probs = (scale * features @ classes.t()).softmax(dim=1)
    affinity = probs @ probs.t()
    weights = torch.full((n,), 1.0 / n, dtype=features.dtype, device=features.device)
    mode = features[0].clone()

    def kernel(at: torch.Tensor) -> torch.Tensor:
        return torch.exp(-((features - at) ** 2).sum(dim=1) / (2 * bandwidth ** 2))

    for _ in range(iterations):
        density = kernel(mode)
        for _ in range(iterations):
            before = weights
            weights = ((density + lambda_q * affinity @ weights) / lambda_y).softmax(dim=0)
            if torch.linalg.norm(before - weights) < tolerance:
                break
        for _ in range(iterations):
            before = mode
            pull = kernel(mode) * weights
            mode = (pull[:, None] * features).sum(dim=0) / pull.sum()
            mode = mode / mode.norm()
            if torch.linalg.norm(before - mode) < tolerance:
                break
    return mode, weights


@ADAPTERS.register_module(name="mta")
class MTA(TrainingFreeAdapter):
    """MTA (Zanella & Ben Ayed, CVPR 2024): the prediction of the views' robust mode (:func:`mta_mode`).

    Args:
        learner: see :class:`TrainingFreeAdapter`.
        lambda_y: the weights' entropy term (0.2); lambda_q: the views' agreement term (4).
    """

    method = "mta"

    def __init__(self, learner: PromptLearner, *, lambda_y: float = 0.2, lambda_q: float = 4.0) -> None:
        if not lambda_y > 0 or not lambda_q >= 0:
            raise ConfigError(f"MTA: lambda_y must be > 0 and lambda_q >= 0, got {lambda_y!r}, {lambda_q!r}")
        super().__init__(learner)
        self.lambda_y, self.lambda_q = float(lambda_y), float(lambda_q)
        #: the mode and the inlierness weights of the last sample
        self.last_mode: torch.Tensor | None = None
        self.last_weights: torch.Tensor | None = None

    def infer(self, features: torch.Tensor, classes: torch.Tensor, scale: float, index: int) -> torch.Tensor:
        self.last_mode, self.last_weights = mta_mode(features, classes, scale, self.lambda_y, self.lambda_q)
        return scale * self.last_mode[None] @ classes.t()

