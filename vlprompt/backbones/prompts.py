"""Prompt specifications: what a learner hands the backbone's towers.

The backbone knows nothing about methods. A learner describes its prompts with these two
dataclasses; every prompt learner in the field is a combination of:

* shallow prompts: learned tokens added to the input sequence (inserted at given positions of
  the text, appended after the patch tokens of an image);
* deep prompts: learned tokens that replace a slice of the sequence before transformer layer i;
* low-rank updates: ``scale * up @ down`` added to a block's linear projections (LoRA), for learners that
  adapt the frozen weights rather than the sequence (:mod:`vlprompt.backbones.lowrank` runs them).

Tensors keep their autograd history, so couplings between the towers (a vision prompt computed
from a text prompt) and per-image conditioning (text prompts that depend on the image) are
expressed by the learner simply by how it computes the tensors it puts here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class LowRankUpdate:
    """A low-rank update of one linear projection: ``W x + b`` becomes ``W x + b + scale * up(down(drop(x)))``.

    Attributes:
        down: ``(r, in_features)``, the learner's ``A``.
        up: ``(out_features, r)``, the learner's ``B``.
        scale: the factor on the update (LoRA's ``alpha / r``).
        dropout: the probability of zeroing the update's input (only the update's; the frozen
            projection sees ``x`` whole). The learner sets it to 0 outside training.
    """

    down: torch.Tensor
    up: torch.Tensor
    scale: float = 1.0
    dropout: float = 0.0


@dataclass
class TokenInsertion:
    """Learned text tokens inserted into a tokenized prompt.

    Attributes:
        tokens: ``(n, D)`` shared by every row, ``(R, n, D)`` one set per row (class-specific
            context), or ``(G, R, n, D)`` / ``(G, 1, n, D)`` one set per group of rows, where a
            group is typically one image (per-image conditioning, as in CoCoOp). With groups the
            text tower returns ``(G, R, E)`` features.
        position: index in the token ids before which the tokens go (1 = right after the
            start-of-text token). An int, or a ``(R,)`` long tensor for per-row positions (e.g.
            after each class name).
    """

    tokens: torch.Tensor
    position: int | torch.Tensor = 1


@dataclass
class TextPrompts:
    """Prompts for the text tower.

    Attributes:
        insert: shallow token insertions, applied to the token embeddings before positions
            are added.
        deep: ``{layer: tokens}``; before transformer layer ``layer`` the tokens at
            ``[deep_start, deep_start + n)`` of the (prompted) sequence are replaced. Tokens are
            ``(n, D)``, ``(R, n, D)`` or ``(G, R, n, D)``.
        deep_start: first replaced index (1 = right after the start-of-text token).
        low_rank: ``{layer: {projection: LowRankUpdate}}``, projections named as in
            :data:`vlprompt.backbones.lowrank.PROJECTIONS` (``q``, ``k``, ``v``, ``out``, ``fc``, ``proj``).
    """

    insert: Sequence[TokenInsertion] = ()
    deep: Mapping[int, torch.Tensor] = field(default_factory=dict)
    deep_start: int = 1
    low_rank: Mapping[int, Mapping[str, LowRankUpdate]] = field(default_factory=dict)


@dataclass
class ImagePrompts:
    """Prompts for a ViT image tower.

    Attributes:
        tokens: ``(n, D)`` or ``(B, n, D)`` tokens appended after the patch tokens (after the
            positional embedding, before the pre-transformer LayerNorm).
        deep: ``{layer: tokens}``; before transformer layer ``layer`` the last ``n`` tokens of
            the sequence (the appended prompts) are replaced. Tokens are ``(n, D)`` or ``(B, n, D)``.
        after_ln_pre: append ``tokens`` after the pre-transformer LayerNorm instead of before it
            (Jia et al.'s VPT and MVLPT insert the prompts into the normalised sequence; MaPLe's
            VPT, IVLP and PromptSRC normalise them with the patches). Where the tokens sit in the
            sequence does not matter otherwise: prompts carry no positional embedding.
        low_rank: ``{layer: {projection: LowRankUpdate}}`` as for :class:`TextPrompts`.
    """

    tokens: torch.Tensor | None = None
    deep: Mapping[int, torch.Tensor] = field(default_factory=dict)
    after_ln_pre: bool = False
    low_rank: Mapping[int, Mapping[str, LowRankUpdate]] = field(default_factory=dict)
