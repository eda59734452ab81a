"""VPT-deep on CLIP: learned tokens in the image tower only, hand-written class prompts.

Jia et al., "Visual Prompt Tuning", ECCV 2022, as the MaPLe repository runs it on CLIP (its
"deep vision prompting" ablation, ``trainers/vpt.py``, config ``VPT/vit_b16_c2_ep5_batch4_4``):
``n`` learned tokens are appended after the patch tokens (after the positional embedding, before
the pre-transformer LayerNorm), and before each of the transformer layers ``1 .. depth-1`` the
``n`` prompt outputs of the previous layer are replaced by that layer's own learned tokens. The
classifier is the frozen text feature of ``"a photo of a {class}."``. The published setting is 8
tokens in all 12 layers of ViT-B/16 (73,728 parameters).

The per-layer prompts come from :func:`vlprompt.learners.common.deep_prompts`, as IVLP's, PromptSRC's and MaPLe's do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..backbones import ImagePrompts, PromptableCLIP
from .base import TemplateClassLearner, register_learner
from .common import DEFAULT_TEMPLATE, check_image_tokens, image_prompt_tokens, layer_prompts


@register_learner("vpt")
class VPT(TemplateClassLearner):
    """Deep visual prompt tuning with fixed hand-written class prompts.

    Args:
        backbone: the frozen CLIP (or its build arguments); the image tower must be a ViT.
        class_names: class names, in label order.
        n_ctx: learned tokens per layer (8 in the published config).
        depth: prompted image layers, counting the input layer (12 = all of ViT-B/16); capped at
            the tower's layer count.
        template: the class prompt (``"a photo of a {}."`` as published).
    """

    def __init__(
        self,
        backbone: PromptableCLIP | dict,
        class_names: Sequence[str],
        n_ctx: int = 8,
        depth: int = 12,
        template: str = DEFAULT_TEMPLATE,
    ) -> None:
        super().__init__(backbone, class_names)
        self.require_vit()
        if depth < 1:
            raise ValueError(f"VPT needs depth >= 1, got {depth}")
        check_image_tokens(self.backbone, n_ctx, "n_ctx", self.learner_name)  # before anything is allocated
        self._hparams = dict(n_ctx=n_ctx, depth=depth, template=template)
        self.init_template(template)
        self.vision_ctx, self.vision_deep, self.prompt_depth = image_prompt_tokens(self.backbone, n_ctx, depth)
        self.finish_init()

    def encode_images(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        prompts = ImagePrompts(tokens=self.vision_ctx, deep=layer_prompts(self.vision_deep))
        return self.backbone.encode_image(images, prompts, normalize=normalize)

    def hparams(self) -> dict:
        return dict(self._hparams)
