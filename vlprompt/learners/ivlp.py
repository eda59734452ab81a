"""IVLP: independent deep prompts in both towers (the backbone prompting of PromptSRC).

Khattak et al., "MaPLe: Multi-modal Prompt Learning", CVPR 2023 (the "independent V-L prompting"
baseline), and "Self-regulating Prompts: Foundational Model Adaptation without Forgetting" (PromptSRC),
ICCV 2023, which trains exactly these prompts with its regularisers (:mod:`.promptsrc`).

* Text: ``n_t`` context vectors from the words of ``ctx_init`` go after the start token,
  ``[SOS] [V]_1 .. [V]_n [CLASS] . [EOS]``; before each text layer ``1 .. depth_t - 1`` the
  ``n_t`` tokens after the start token are replaced by that layer's learned tokens.
* Image: ``n_v`` learned tokens are appended after the patch tokens, and replaced by each image
  layer's own learned tokens in layers ``1 .. depth_v - 1``.

The two towers' prompts are independent (no coupling, unlike MaPLe). All deep prompts and the
image tokens start from N(0, 0.02^2). The published setting (4 + 4 tokens, depth 9 in each tower)
has 9 x 4 x 512 + 9 x 4 x 768 = 46,080 parameters on ViT-B/16.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..backbones import ImagePrompts, PromptableCLIP, TextPrompts, TokenInsertion
from .base import PromptLearner, register_learner
from .common import (
    check_image_tokens,
    check_text_tokens,
    deep_prompts,
    image_prompt_tokens,
    layer_prompts,
    phrase_class_token_ids,
    phrase_context,
    prompt_depth,
)


@register_learner("ivlp")
class IVLP(PromptLearner):
    """Independent vision-language deep prompting.

    Args:
        backbone: the frozen CLIP (or its build arguments); image prompts need a ViT.
        class_names: class names, in label order.
        n_ctx_text: text context vectors (initialised from the first words of ``ctx_init``).
        n_ctx_vision: image prompt tokens.
        ctx_init: initial phrase of the text context; empty for N(0, 0.02^2).
        text_depth: prompted text layers counting the input (>= 1); capped at the layer count.
        vision_depth: prompted image layers counting the input; 0 for no image prompts.
    """

    def __init__(
        self,
        backbone: PromptableCLIP | dict,
        class_names: Sequence[str],
        n_ctx_text: int = 4,
        n_ctx_vision: int = 4,
        ctx_init: str | None = "a photo of a",
        text_depth: int = 9,
        vision_depth: int = 9,
    ) -> None:
        super().__init__(backbone, class_names)
        if text_depth < 1:
            raise ValueError(f"{type(self).__name__} learns text prompts: text_depth must be >= 1 "
                             "(for image prompts alone use the 'vpt' learner)")
        if vision_depth > 0:
            self.require_vit("set vision_depth=0")
            check_image_tokens(self.backbone, n_ctx_vision, "n_ctx_vision", self.learner_name)
        check_text_tokens(self.backbone, n_ctx_text, "n_ctx_text", self.learner_name)  # before any allocation
        self._hparams = dict(n_ctx_text=n_ctx_text, n_ctx_vision=n_ctx_vision, ctx_init=ctx_init,
                             text_depth=text_depth, vision_depth=vision_depth)
        self.ctx_init = ctx_init
        self.n_ctx = n_ctx_text
        self.prompt_length = n_ctx_text
        self.text_depth = prompt_depth(text_depth, self.backbone.text_layers)
        self.vision_depth = prompt_depth(vision_depth, self.backbone.vision_layers) if vision_depth else 0
        device, text_width = self.device, self.backbone.text_width
        self.ctx = nn.Parameter(phrase_context(self.backbone, n_ctx_text, ctx_init, "n_ctx_text",
                                               self.learner_name).to(device))
        self.text_deep = deep_prompts(n_ctx_text, text_width, self.text_depth).to(device)
        if self.vision_depth:
            self.vision_ctx, self.vision_deep, _ = image_prompt_tokens(self.backbone, n_ctx_vision, self.vision_depth)
        else:
            self.register_parameter("vision_ctx", None)
            self.vision_deep = nn.ParameterDict()
        self.finish_init()

    def tokenize_classes(self, class_names: Sequence[str]) -> torch.Tensor:
        return phrase_class_token_ids(self.backbone, class_names, self.ctx_init, self.n_ctx)

    def text_prompts(self) -> TextPrompts:
        return TextPrompts(insert=[TokenInsertion(self.ctx, 1)], deep=layer_prompts(self.text_deep), deep_start=1)

    def image_prompts(self) -> ImagePrompts | None:
        if self.vision_ctx is None:
            return None
        return ImagePrompts(tokens=self.vision_ctx, deep=layer_prompts(self.vision_deep))

    def encode_classes(self, image_features: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        return self.backbone.encode_text(self.class_token_ids, self.text_prompts(), normalize=normalize)

    def encode_images(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.backbone.encode_image(images, self.image_prompts(), normalize=normalize)

    def hparams(self) -> dict:
        return dict(self._hparams)
