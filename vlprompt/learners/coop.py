"""CoOp: learned context vectors in place of a hand-written prompt.

Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022.
The text input of class ``c`` is ``[SOS] [V]_1 ... [V]_M [CLASS_c] . [EOS]`` with the M context
vectors learned (shared by all classes, or one set per class). They start from the word
embeddings of an initial phrase ("a photo of a") or from N(0, 0.02^2). The class token may also
go first or in the middle of the context.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from ..backbones import PromptableCLIP, TextPrompts
from ..registry import LEARNERS
from .base import PromptLearner
from .common import CLASS_TOKEN_POSITIONS, context_insertions, init_context


@LEARNERS.register_module(name="coop")
class CoOp(PromptLearner):
    """Context optimisation.

    Args:
        backbone: the frozen CLIP (or its build arguments).
        class_names: class names, in label order.
        n_ctx: number of context vectors (ignored when ``ctx_init`` gives the words).
        ctx_init: initial phrase, e.g. ``"a photo of a"``; empty for random init.
        class_specific: one context per class (CSC) instead of a shared one; the class count
            is then fixed at construction. Only with random init: as in the official CoOp (whose
            ``CSC`` applies only when ``CTX_INIT`` is empty), a ``ctx_init`` phrase gives one shared
            context, and ``class_specific`` is then ignored with a warning.
        class_token_position: ``"end"``, ``"middle"`` or ``"front"``.
    """

    learner_name = "coop"

    def __init__(
        self,
        backbone: PromptableCLIP | dict,
        class_names: Sequence[str],
        n_ctx: int = 16,
        ctx_init: str | None = "",
        class_specific: bool = False,
        class_token_position: str = "end",
    ) -> None:
        super().__init__(backbone, class_names)
        if class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(f"class_token_position must be end, middle or front, got {class_token_position!r}")
        ctx, _ = init_context(self.backbone, n_ctx, ctx_init)
        if class_specific and ctx_init:
            warnings.warn(f"CoOp: class_specific=True is ignored with ctx_init={ctx_init!r}: the context starts from "
                          "the phrase and is shared by all classes, as in the official CoOp (CSC applies only to "
                          "random init; set ctx_init='' for class-specific contexts)", UserWarning, stacklevel=2)
            class_specific = False
        if class_specific:
            ctx = torch.randn(len(class_names), n_ctx, self.backbone.text_width) * 0.02
        self.ctx = nn.Parameter(ctx.to(self.device))
        self.n_ctx = ctx.shape[-2]
        self.prompt_length = self.n_ctx
        self._hparams = dict(n_ctx=n_ctx, ctx_init=ctx_init, class_specific=class_specific,
                             class_token_position=class_token_position)
        self.class_token_position = class_token_position
        self.finish_init()

    def set_classes(self, class_names: Sequence[str]) -> None:
        if self.ctx.dim() == 3 and len(class_names) != self.ctx.shape[0]:
            raise ValueError(
                f"class-specific context was learned for {self.ctx.shape[0]} classes; "
                f"it cannot serve {len(class_names)} other classes"
            )
        super().set_classes(class_names)

    def text_prompts(self, ctx: torch.Tensor) -> TextPrompts:
        """Where the context goes for the configured class-token position."""
        return TextPrompts(insert=context_insertions(self.class_token_ids, ctx, self.class_token_position))

    def encode_classes(self, image_features: torch.Tensor | None = None) -> torch.Tensor:
        return self.backbone.encode_text(self.class_token_ids, self.text_prompts(self.ctx), normalize=True)

    def hparams(self) -> dict:
        return dict(self._hparams)
