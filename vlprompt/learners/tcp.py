"""TCP: textual-based class-aware prompt tuning.

Yao, Zhang and Xu, "TCP: Textual-based Class-aware Prompt tuning for Visual-Language Model", CVPR 2024 (official
code: htyao89/Textual-based_Class-aware_prompt_tuning). KgCoOp's learner (a shared context after the start token,
the knowledge-guided term ``w (1 - mean_c cos(t_c, t_c^clip))`` with w = 8 towards the frozen features of the
dataset's hand-written template) plus class-aware tokens: a small network (Linear E -> E/4, QuickGELU, Linear ->
n_ctx x D) maps each class's frozen template feature to ``n_ctx`` tokens that *replace* the context's hidden
states at the input of text layer ``layer`` (8 of 12, 0-based): the layers below see the shared context, the
layers from ``layer`` on see each class's own tokens.

The learnable prompt's text after the context is ``prompt_template`` (``"{}."`` by default): the official code
writes some datasets' prompts with their own suffix (``"{}, a type of pet."``), which the configs' recipe gives.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ..backbones import PromptableCLIP, TextPrompts
from .base import register_learner
from .common import DEFAULT_TEMPLATE, context_insertions, prompt_class_name
from .kgcoop import KgCoOp


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: OpenAI CLIP's activation, the one TCP's token network uses."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


@register_learner("tcp")
class TCP(KgCoOp):
    """Class-aware prompts generated from the frozen class text features.

    Args:
        backbone: the frozen CLIP (or its build arguments).
        class_names: class names, in label order.
        n_ctx: context vectors after the start token, and class-aware tokens per class (4).
        ctx_init: initial phrase of the context; empty (the published setting): N(0, 0.02^2).
        w: weight of the knowledge-guided term ``loss_kg`` (8.0).
        template: the hand-written template whose frozen features feed the token network and anchor ``loss_kg``.
        prompt_template: the learnable prompt's text after the context, ``{}`` for the class name.
        layer: the text layer (0-based) at whose input the class-aware tokens replace the context; ``None``: two
            thirds of the way up, the published 8 of a 12-layer text tower (OpenAI's ViT-B/16 and ViT-L/14).
    """

    def __init__(
        self,
        backbone: PromptableCLIP | dict,
        class_names: Sequence[str],
        n_ctx: int = 4,
        ctx_init: str | None = "",
        w: float = 8.0,
        template: str = DEFAULT_TEMPLATE,
        prompt_template: str = "{}.",
        layer: int | None = None,
    ) -> None:
        if "{}" not in prompt_template:
            raise ValueError(f"prompt_template needs a '{{}}' for the class name, got {prompt_template!r}")
        self.prompt_template = prompt_template
        super().__init__(backbone, class_names, n_ctx=n_ctx, ctx_init=ctx_init, w=w, template=template)
        layers = self.backbone.text_layers
        layer = round(layers * 2 / 3) if layer is None else layer
        if not 0 < layer < layers:
            raise ValueError(f"layer must be between 1 and {layers - 1} (the text tower has {layers}), got {layer}")
        self.layer = int(layer)
        embed, width = self.backbone.embed_dim, self.backbone.text_width
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(embed, embed // 4)),
            ("gelu", QuickGELU()),
            ("linear2", nn.Linear(embed // 4, self.n_ctx * width)),
        ])).to(self.device)

    def tokenize_classes(self, class_names: Sequence[str]) -> torch.Tensor:
        """``prompt_template`` per class, with the context's slots reserved after the start token."""
        texts = [self.prompt_template.format(prompt_class_name(name)) for name in class_names]
        return self.backbone.tokenize(texts, reserve=self.prompt_length)

    def class_tokens(self) -> torch.Tensor:
        """``(C, n_ctx, D)``: each class's tokens from its frozen template feature."""
        feats = self.clip_class_features.to(self.meta_net.linear1.weight.dtype)
        return self.meta_net(feats).reshape(len(feats), self.n_ctx, -1)

    def encode_classes(self, image_features: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        prompts = TextPrompts(insert=context_insertions(self.class_token_ids, self.ctx, "end"),
                              deep={self.layer: self.class_tokens().to(self.ctx.dtype)})
        return self.backbone.encode_text(self.class_token_ids, prompts, normalize=normalize)

    def hparams(self) -> dict:
        return {"n_ctx": self.n_ctx, "ctx_init": self._hparams["ctx_init"], "w": self.w, "template": self.template,
                "prompt_template": self.prompt_template, "layer": self.layer}
