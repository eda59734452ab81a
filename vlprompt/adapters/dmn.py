"""DMN-ZS: the training-free dynamic memory of Dual Memory Networks.

Zhang et al., "Dual Memory Networks: A Versatile Adaptation Approach for Vision-Language Models", CVPR 2024
(official code YBZh/DMN, its zero-shot runs: no few-shot static memory, nothing trained, so its memory's
projections are the identity). Per test sample, in stream order (:meth:`DMN.infer`):

1. the mean probability of the 10% most confident views (``int(32 x 0.1) = 3``) gives a pseudo-label and
   an entropy; only the memory write uses them;
2. the original view's feature is written to the memory under the pseudo-label (50 slots a class; a full
   class keeps the entry only in place of its highest-entropy one, when lower), *before* the read-out;
3. the read-out of the original view ``q``: each class's prototype is the normalised sum of its entries and
   its text feature (an entry that is always there), each weighted by ``exp(-beta (1 - q . entry))``; the
   memory's probabilities are the softmax of ``scale x q . prototype``;
4. the prediction fuses probabilities: CLIP's on the original view + ``fusion`` x the memory's.

The official code chooses ``fusion`` per dataset by a search on the test labels; vlprompt takes the values that
search found in the official logs as fixed, published settings (configs/dmn/_method.py). The logits returned are
the log of the fused probabilities renormalised, so their softmax (what ECE is measured on) is the fused
prediction.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..learners import PromptLearner
from ..registry import ADAPTERS
from .base import confident_views, saved_tensor
from .cache import ClassCache
from .training_free import TrainingFreeAdapter, probabilities_as_logits

__all__ = ["DMN", "memory_probs"]


def memory_probs(memory: ClassCache, text: torch.Tensor, query: torch.Tensor, beta: float, scale: float
                 ) -> torch.Tensor:
    """The memory's class probabilities ``(C,)`` for the normalised ``query`` ``(E,)``: each class's prototype is
    the normalised sum of its entries and its text feature (``text``, ``(C, E)``), weighted by
    ``exp(-beta (1 - query . entry))``."""
    weights = memory.affinity(query, beta)
    prototypes = torch.einsum("ck,cke->ce", weights, memory.features)
    prototypes = prototypes + torch.exp(-beta * (1 - text @ query))[:, None] * text
    return (scale * F.normalize(prototypes, dim=-1) @ query).softmax(dim=-1)


@ADAPTERS.register_module(name="dmn")
class DMN(TrainingFreeAdapter):
    """DMN-ZS (Zhang et al., CVPR 2024): CLIP's probabilities plus ``fusion`` x those of a memory of test features.

    Args:
        learner: gives the class features and the image tower (see :class:`TrainingFreeAdapter`).
        shape: ``(classes, dim)`` without a learner (features only).
        memory_size: slots per class (50).
        beta: the read-out's sharpness (5.5).
        fusion: the weight of the memory's probabilities (the official per-dataset values: configs/dmn).
        selection_p: the share of views whose mean probability gives the pseudo-label (0.1).
    """

    method = "dmn"
    keeps_state: ClassVar[bool] = True

    def __init__(self, learner: PromptLearner | None, *, shape: tuple[int, int] | None = None,
                 memory_size: int = 50, beta: float = 5.5, fusion: float = 1.0,
                 selection_p: float = 0.1) -> None:
        if not isinstance(memory_size, int) or memory_size < 1:
            raise ConfigError(f"DMN: memory_size must be an int >= 1, got {memory_size!r}")
        if not 0 < selection_p <= 1:
            raise ConfigError(f"DMN: selection_p must lie in (0, 1], got {selection_p!r}")
        if not fusion >= 0 or not beta >= 0:
            raise ConfigError(f"DMN: fusion and beta must be >= 0, got {fusion!r}, {beta!r}")
        super().__init__(learner, shape)
        self.beta, self.fusion, self.selection_p = float(beta), float(fusion), float(selection_p)
        self.memory = ClassCache(*self.shape[:1], memory_size, self.shape[1], device=self.device)
        #: the last sample's pseudo-label and the memory's probabilities (for tests and diagnostics)
        self.last_pseudo_label: int | None = None
        self.last_memory_probs: torch.Tensor | None = None

    # ------------------------------------------------------------------ state
    def carried_state(self) -> dict[str, torch.Tensor]:
        """The memory and the sample count."""
        state = {"samples_seen": torch.tensor(self.samples_seen), **self.memory.state("memory")}
        return {k: v.detach().cpu().clone() for k, v in state.items()}

    def load_carried_state(self, state: dict[str, torch.Tensor]) -> None:
        self.samples_seen = int(saved_tensor(state, "samples_seen", torch.tensor(0)))
        self.memory.load_state(state, "memory")

    def restart(self) -> None:
        """Empty the memory: a new stream."""
        super().restart()
        self.memory.clear()

    # ------------------------------------------------------------------ one sample
    def infer(self, features: torch.Tensor, classes: torch.Tensor, scale: float, index: int) -> torch.Tensor:
        logits = scale * features @ classes.t()
        probs = logits.softmax(dim=-1)
        mean = probs[confident_views(logits, self.selection_p)].mean(dim=0)
        self.last_pseudo_label = int(mean.argmax())
        self.memory.admit(self.last_pseudo_label, features[0], -(mean * torch.log(mean + 1e-8)).sum())
        self.last_memory_probs = memory_probs(self.memory, classes, features[0], self.beta, scale)
        fused = (probs[0] + self.fusion * self.last_memory_probs) / (1 + self.fusion)
        return probabilities_as_logits(fused)
