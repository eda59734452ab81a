"""CLIP-LoRA: low-rank updates of the attention projections of both towers, nothing inserted.

Zanella & Ben Ayed, "Low-Rank Few-Shot Adaptation of Vision-Language Models", CVPR Workshops 2024
(MaxZanella/CLIP-LoRA). Every block of both towers gets rank-2 updates of its query, key and value
projections, each with its own ``down`` (``A``, Kaiming-uniform) and ``up`` (``B``, zero, so training starts at
zero-shot CLIP), scaled by ``alpha / sqrt(r)`` (the official ``loralib``; not LoRA's ``alpha / r``) and fed an
input with dropout 0.25 during training. The class prompts are ``"a photo of a {}."`` for every dataset (the
official code's only active template), encoded with the updated text tower at every step, and the logits use the
constant scale 100, not the backbone's learned temperature (the official ``main.py``).

The updates reach the frozen backbone as :class:`~vlprompt.backbones.LowRankUpdate` s (its general low-rank
ability): the backbone's weights never change, and checkpoints hold only ``down`` and ``up``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..backbones import ImagePrompts, LowRankUpdate, PromptableCLIP, TextPrompts
from ..backbones.lowrank import PROJECTIONS, projection_shapes
from .base import PromptLearner, register_learner
from .common import prompt_class_name

TOWERS = ("text", "image")

#: CLIP-LoRA's named layer sets (``--position``) on a tower of ``n`` blocks: for 12 blocks the official sets
#: (bottom 0-3, mid 4-7, up 8-11, half-up 6-11, half-bottom 0-5, top3 9-11); thirds and halves of other depths
#: (the official code names only half-up, half-bottom and all for ViT-L/14's 24 image blocks)
POSITIONS = {
    "all": lambda n: list(range(n)),
    "bottom": lambda n: list(range(n // 3)),
    "mid": lambda n: list(range(n // 3, 2 * n // 3)),
    "up": lambda n: list(range(2 * n // 3, n)),
    "half-up": lambda n: list(range(n // 2, n)),
    "half-bottom": lambda n: list(range(n // 2)),
    "top3": lambda n: list(range(n - 3, n)),
}


class LowRankPair(nn.Module):
    """The learned ``down`` ``(r, in)`` and ``up`` ``(out, r)`` of one projection, initialised as LoRA does:
    ``down`` Kaiming-uniform (``a = sqrt(5)``, nn.Linear's default), ``up`` zero."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Parameter(torch.empty(rank, in_features))
        self.up = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))


@register_learner("clip_lora")
class CLIPLoRA(PromptLearner):
    """Low-rank adaptation of the frozen CLIP's projections.

    Args:
        backbone: the frozen CLIP (or its build arguments).
        class_names: class names, in label order.
        rank: the updates' rank ``r`` (2 as published).
        alpha: the updates are scaled by ``alpha / sqrt(rank)`` (alpha 1 as published: 0.7071 at rank 2).
        dropout: dropout on each update's input during training (0.25 as published).
        towers: ``("text", "image")``, or one of them (CLIP-LoRA's ``--encoder``).
        position: the adapted blocks of each tower: a name of :data:`POSITIONS` (``"all"`` as published) or a list
            of block indices.
        projections: which projections of a block (:data:`vlprompt.backbones.lowrank.PROJECTIONS`; ``q``, ``k``,
            ``v`` as published).
        template: the class prompt, ``"{}"`` the class name (``"a photo of a {}."`` for every dataset, as published).
        logit_scale: the constant that multiplies the cosine similarities (100 as published); ``None``: the
            backbone's learned temperature.
    """

    def __init__(
        self,
        backbone: PromptableCLIP | dict,
        class_names: Sequence[str],
        rank: int = 2,
        alpha: float = 1.0,
        dropout: float = 0.25,
        towers: Sequence[str] = TOWERS,
        position: str | Sequence[int] = "all",
        projections: Sequence[str] = ("q", "k", "v"),
        template: str = "a photo of a {}.",
        logit_scale: float | None = 100.0,
    ) -> None:
        super().__init__(backbone, class_names)
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        towers = [towers] if isinstance(towers, str) else list(towers)
        bad = [t for t in towers if t not in TOWERS] or ([] if towers else ["(none)"])
        if bad:
            raise ValueError(f"towers {bad}: choose from {TOWERS}")
        projections = [projections] if isinstance(projections, str) else list(projections)
        bad = [p for p in projections if p not in PROJECTIONS] or ([] if projections else ["(none)"])
        if bad:
            raise ValueError(f"projections {bad}: choose from {', '.join(PROJECTIONS)}")
        if "{}" not in template:
            raise ValueError(f"template {template!r} has no '{{}}' for the class name")
        if logit_scale is not None and not float(logit_scale) > 0:
            raise ValueError(f"logit_scale must be positive (or None for the backbone's), got {logit_scale!r}")
        if "image" in towers:
            self.require_vit("use towers=('text',)")
        self.rank, self.alpha, self.dropout = rank, float(alpha), float(dropout)
        self.towers, self.projections, self.template = tuple(towers), tuple(projections), template
        self.logit_scale = None if logit_scale is None else float(logit_scale)
        self.position = position if isinstance(position, str) else [int(i) for i in position]
        self.adapters = nn.ModuleDict()
        for tower in self.towers:
            blocks = self._blocks(tower)
            layers = self._layers(len(blocks), tower)
            self.adapters[tower] = nn.ModuleDict({
                str(i): nn.ModuleDict({
                    name: LowRankPair(shape[1], shape[0], rank)
                    for name, shape in projection_shapes(blocks[i]).items() if name in self.projections})
                for i in layers})
        self.finish_init()

    def _blocks(self, tower: str) -> nn.ModuleList:
        model = self.backbone.model
        return model.transformer.resblocks if tower == "text" else model.visual.transformer.resblocks

    def _layers(self, n_blocks: int, tower: str) -> list[int]:
        if isinstance(self.position, str):
            if self.position not in POSITIONS:
                raise ValueError(f"position {self.position!r}: choose from {', '.join(POSITIONS)} or give block "
                                 "indices")
            return POSITIONS[self.position](n_blocks)
        bad = [i for i in self.position if not 0 <= i < n_blocks]
        if bad:
            raise ValueError(f"position {bad}: the {tower} tower has blocks 0..{n_blocks - 1}")
        return sorted(set(self.position))

    def low_rank(self, tower: str) -> dict[int, dict[str, LowRankUpdate]]:
        """The tower's updates as the backbone takes them; dropout only while training."""
        if tower not in self.adapters:
            return {}
        scale, dropout = self.alpha / math.sqrt(self.rank), self.dropout if self.training else 0.0
        return {int(i): {name: LowRankUpdate(pair.down, pair.up, scale, dropout) for name, pair in per.items()}
                for i, per in self.adapters[tower].items()}

    def tokenize_classes(self, class_names: Sequence[str]) -> torch.Tensor:
        """The template filled with each class name (underscores as spaces)."""
        return self.backbone.tokenize([self.template.format(prompt_class_name(n)) for n in class_names])

    def encode_classes(self, image_features: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        return self.backbone.encode_text(self.class_token_ids, TextPrompts(low_rank=self.low_rank("text")),
                                         normalize=normalize)

    def encode_images(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        if "image" not in self.adapters:
            return self.backbone.encode_image(images, normalize=normalize)
        return self.backbone.encode_image(images, ImagePrompts(low_rank=self.low_rank("image")), normalize=normalize)

    def hparams(self) -> dict:
        return {"rank": self.rank, "alpha": self.alpha, "dropout": self.dropout, "towers": list(self.towers),
                "position": self.position, "projections": list(self.projections), "template": self.template,
                "logit_scale": self.logit_scale}
