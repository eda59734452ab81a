"""MaPLe: multi-modal prompts, the image prompts computed from the text prompts.

Khattak et al., "MaPLe: Multi-modal Prompt Learning", CVPR 2023.

* Text: 2 context vectors from the first two token embeddings of "a photo of a"; the rest of the
  phrase stays in the prompt as fixed words (the published code tokenizes "a photo of a {class}."
  and replaces the first two tokens), so the text input is
  ``[SOS] [V]_1 [V]_2 of a {class} . [EOS]``. Before each text layer ``i = 1 .. J-1`` the two
  tokens after the start token are replaced by the learned deep prompt ``P_i`` ``(2, 512)``,
  N(0, 0.02^2).
* Image: the V-L coupling functions ``F_i`` (``Linear(512 -> 768)``) map the text prompts to the
  image tower: ``F_0(ctx)`` is appended after the patch tokens, and ``F_i(P_i)`` replaces the two
  prompt tokens before image layer ``i``. Image prompts are functions of the text prompts, so the
  text prompts get gradients through both towers.

Published setting: J = 9, 2 tokens, 3,555,072 parameters on ViT-B/16 (8 x 2 x 512 deep text
prompts, 9 couplings of 512 x 768 + 768, the 2 x 512 context). As in the published code, the 8
deep couplings start as copies of one randomly initialised Linear layer (``F_0`` has its own init).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from ..backbones import ImagePrompts, PromptableCLIP, TextPrompts, TokenInsertion
from .base import PromptLearner, register_learner
from .common import (
    check_image_tokens,
    check_text_tokens,
    deep_prompts,
    layer_prompts,
    phrase_class_token_ids,
    phrase_context,
    prompt_depth,
)


@register_learner("maple")
class MaPLe(PromptLearner):
    """Multi-modal prompt learning.

    Args:
        backbone: the frozen CLIP (or its build arguments); the image tower must be a ViT.
        class_names: class names, in label order.
        n_ctx: prompt tokens per layer in each tower (2 as published).
        ctx_init: initial phrase of the text context; its words past ``n_ctx`` stay in the
            prompt (empty for N(0, 0.02^2) and no fixed words).
        depth: prompted layers J in both towers, counting the input layer (9 as published;
            3 for cross-dataset / domain generalization); capped at the towers' layer counts.
    """

    def __init__(
        self,
        backbone: PromptableCLIP | dict,
        class_names: Sequence[str],
        n_ctx: int = 2,
        ctx_init: str | None = "a photo of a",
        depth: int = 9,
    ) -> None:
        super().__init__(backbone, class_names)
        self.require_vit()
        if depth < 1:
            raise ValueError(f"MaPLe needs depth >= 1, got {depth}")
        check_text_tokens(self.backbone, n_ctx, "n_ctx", self.learner_name)  # the same tokens go to both towers
        check_image_tokens(self.backbone, n_ctx, "n_ctx", self.learner_name)
        self._hparams = dict(n_ctx=n_ctx, ctx_init=ctx_init, depth=depth)
        self.ctx_init = ctx_init
        self.n_ctx = n_ctx
        self.prompt_length = n_ctx
        self.depth = prompt_depth(depth, self.backbone.text_layers, self.backbone.vision_layers)
        device = self.device
        text_width, vision_width = self.backbone.text_width, self.backbone.vision_width
        self.ctx = nn.Parameter(phrase_context(self.backbone, n_ctx, ctx_init, who=self.learner_name).to(device))
        self.text_deep = deep_prompts(n_ctx, text_width, self.depth).to(device)
        shallow = nn.Linear(text_width, vision_width)
        deep = nn.Linear(text_width, vision_width)
        self.proj = nn.ModuleDict(
            {"0": shallow, **{str(layer): copy.deepcopy(deep) for layer in range(1, self.depth)}}
        ).to(device)
        self.finish_init()

    def tokenize_classes(self, class_names: Sequence[str]) -> torch.Tensor:
        return phrase_class_token_ids(self.backbone, class_names, self.ctx_init, self.n_ctx)

    def text_prompts(self) -> TextPrompts:
        return TextPrompts(insert=[TokenInsertion(self.ctx, 1)], deep=layer_prompts(self.text_deep), deep_start=1)

    def image_prompts(self) -> ImagePrompts:
        """The image prompts: the couplings applied to the text prompts (autograd kept)."""
        deep = {layer: self.proj[str(layer)](tokens) for layer, tokens in layer_prompts(self.text_deep).items()}
        return ImagePrompts(tokens=self.proj["0"](self.ctx), deep=deep)

    def encode_classes(self, image_features: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        return self.backbone.encode_text(self.class_token_ids, self.text_prompts(), normalize=normalize)

    def encode_images(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.backbone.encode_image(images, self.image_prompts(), normalize=normalize)

    def hparams(self) -> dict:
        return dict(self._hparams)
