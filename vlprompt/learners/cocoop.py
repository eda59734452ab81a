"""CoCoOp: CoOp's context shifted per image by a small Meta-Net.

Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022.
The Meta-Net maps the normalised image feature ``x`` to a bias ``pi(x)`` in the word-embedding
space, added to every context vector: the prompt of class ``c`` for image ``x`` is
``[SOS] [V]_1 + pi(x) ... [V]_M + pi(x) [CLASS_c] . [EOS]``. Every image thus has its own class
features, and the logit of (image b, class c) is the scaled cosine between image b's feature and
class c's feature computed with image b's context.

The published code runs the text tower once per image of the batch; here the whole batch goes in
one text-tower call (one group of class prompts per image), which gives the same logits.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..backbones import PromptableCLIP, TextPrompts, TokenInsertion
from .base import PromptLearner, register_learner
from .common import init_context, phrase_sized_settings


@register_learner("cocoop")
class CoCoOp(PromptLearner):
    """Conditional context optimisation.

    Args:
        backbone: the frozen CLIP (or its build arguments).
        class_names: class names, in label order.
        n_ctx: number of context vectors (ignored when ``ctx_init`` gives the words).
        ctx_init: initial phrase (``"a photo of a"``, the published setting); empty for random
            N(0, 0.02^2) init.

    The Meta-Net is ``Linear(E, E // 16) - ReLU - Linear(E // 16, D)`` with ``E`` the joint
    embedding size (512 for ViT-B/16, so 32 hidden units) and ``D`` the text width.
    """

    image_conditioned_text = True

    def __init__(
        self,
        backbone: PromptableCLIP | dict,
        class_names: Sequence[str],
        n_ctx: int = 4,
        ctx_init: str | None = "a photo of a",
    ) -> None:
        super().__init__(backbone, class_names)
        ctx, _ = init_context(self.backbone, n_ctx, ctx_init, who=self.learner_name)
        self.ctx = nn.Parameter(ctx.to(self.device))
        self.n_ctx = ctx.shape[0]
        self.prompt_length = self.n_ctx
        vis_dim = self.backbone.embed_dim
        hidden = max(1, vis_dim // 16)
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(vis_dim, hidden)),
            ("relu", nn.ReLU()),
            ("linear2", nn.Linear(hidden, self.backbone.text_width)),
        ])).to(self.device)
        self._hparams = dict(n_ctx=self.n_ctx, ctx_init=ctx_init)  # what was built (a phrase may give fewer)
        self.finish_init()

    def conditioned_context(self, image_features: torch.Tensor) -> torch.Tensor:
        """Per-image context ``(B, n_ctx, D)``: the shared context plus the Meta-Net's bias."""
        bias = self.meta_net(image_features.to(self.ctx.dtype))  # (B, D)
        return self.ctx[None] + bias[:, None]

    def encode_classes(self, image_features: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        """Class features ``(B, C, E)``, one set per image, in one text-tower call."""
        if image_features is None:
            raise ValueError("CoCoOp's class features depend on the image: pass the image features")
        ctx = self.conditioned_context(image_features)
        prompts = TextPrompts(insert=[TokenInsertion(ctx[:, None], 1)])  # (B, 1, n_ctx, D): one group per image
        return self.backbone.encode_text(self.class_token_ids, prompts, normalize=normalize)

    def hparams(self) -> dict:
        return dict(self._hparams)

    @classmethod
    def settings_as_built(cls, settings: Mapping[str, Any]) -> dict[str, Any]:  # noqa: D102 - a phrase sizes n_ctx
        return phrase_sized_settings(cls, settings)
