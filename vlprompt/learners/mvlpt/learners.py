"""MVLPT's three prompt families: MCoOp (text), MVPT (deep visual) and MUPT (unified, coupled).

Shen et al., "Multitask Vision-Language Prompt Tuning", WACV 2024 (official code sIncerass/MVLPT).
MVLPT learns one prompt on the union of many source tasks (:class:`vlprompt.datasets.MultitaskDataset`,
:class:`vlprompt.learners.mvlpt.model.MultitaskModel`) and starts a target task's prompt from it (``load_from`` of the
source's ``learned.safetensors``). The learners themselves are single-task prompt learners, as in the
official trainer, which picks the family by which context lengths are non-zero:

* ``mcoop``: CoOp with 16 generic context vectors from N(0, 0.02^2) and the class name in the
  *middle* (8 vectors, the class name, 8 vectors, the period), as every MVLPT script sets it.
* ``mvpt``: deep visual prompts (Jia et al.'s VPT-deep): 16 tokens join the image sequence *after*
  the pre-transformer LayerNorm, and before each later layer they are replaced by that layer's own
  tokens (all 12 layers of ViT-B/16: 1 + 11 sets); uniform init in +-sqrt(6 / (3 p^2 + width)) for
  patch size ``p``. Class features are the frozen ``"a photo of a {class}."``.
* ``mupt``: 4 text tokens (middle position, N(0, 0.02^2)) and 4 deep visual tokens per layer, all
  mapped to a shared 128-d space (one linear map per modality; the identity where a tower is
  already 128 wide), passed through a 1-layer, 1-head CLIP transformer block (QuickGELU, fp32) and
  mapped back, at every forward. In the official code that block is handed a batch-first
  ``(1, 52, 128)`` tensor while it expects sequence-first input, so each of the 52 tokens is a
  sequence of its own and attends only to itself: the coupling is a per-token residual map whose
  weights are shared across modalities and layers. ``token_mixing=False`` (the default) reproduces
  that; ``token_mixing=True`` is the evident intent, tokens attending to each other, a labelled
  deviation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from open_clip.transformer import QuickGELU, ResidualAttentionBlock
from torch import nn

from ...backbones import ImagePrompts, PromptableCLIP, TextPrompts
from ..base import PromptLearner, TemplateClassLearner, register_learner
from ..common import (
    CLASS_TOKEN_POSITIONS,
    DEFAULT_TEMPLATE,
    check_image_tokens,
    check_text_tokens,
    context_insertions,
    prompt_depth,
)
from ..coop import CoOp

__all__ = ["MCoOp", "MUPT", "MVPT", "vpt_uniform_init"]


def vpt_uniform_init(shape: Sequence[int], patch_size: int, width: int) -> torch.Tensor:
    """VPT's Xavier-style init: uniform in +-sqrt(6 / (3 p^2 + width)) (3 p^2 is a patch's pixel count)."""
    bound = math.sqrt(6.0 / float(3 * patch_size * patch_size + width))
    return torch.empty(*shape).uniform_(-bound, bound)


@register_learner("mcoop")
class MCoOp(CoOp):
    """MVLPT's text prompts: CoOp with its multitask defaults (16 random vectors, class name in the middle).

    Args: those of :class:`~vlprompt.learners.CoOp`, with MVLPT's defaults.
    """


    def __init__(self, backbone: PromptableCLIP | dict, class_names: Sequence[str], n_ctx: int = 16,
                 ctx_init: str | None = "", class_specific: bool = False,
                 class_token_position: str = "middle") -> None:
        super().__init__(backbone, class_names, n_ctx=n_ctx, ctx_init=ctx_init, class_specific=class_specific,
                         class_token_position=class_token_position)


class _DeepVisualPrompts(PromptLearner):
    """The visual half shared by MVPT and MUPT: ``vision_ctx`` ``(n, W)`` for the input layer and
    ``vision_deep`` ``(depth - 1, n, W)`` for layers ``1 .. depth - 1``, both VPT-uniform."""

    def _init_visual(self, n_ctx: int, depth: int, key: str = "n_ctx") -> None:
        self.require_vit()
        if n_ctx < 1 or depth < 1:
            raise ValueError(f"{type(self).__name__} needs n_ctx >= 1 and depth >= 1, got {n_ctx} and {depth}")
        check_image_tokens(self.backbone, n_ctx, key, self.learner_name)  # before anything is allocated
        self.prompt_depth = prompt_depth(depth, self.backbone.vision_layers)
        width, patch = self.backbone.vision_width, self.backbone.patch_size
        self.vision_ctx = nn.Parameter(vpt_uniform_init((n_ctx, width), patch, width).to(self.device))
        self.vision_deep = nn.Parameter(
            vpt_uniform_init((self.prompt_depth - 1, n_ctx, width), patch, width).to(self.device))

    @staticmethod
    def image_prompts(shallow: torch.Tensor, deep: torch.Tensor) -> ImagePrompts:
        """Shallow tokens after the pre-transformer LayerNorm, then one replacement set per deeper layer."""
        return ImagePrompts(tokens=shallow, deep={i + 1: deep[i] for i in range(deep.shape[0])}, after_ln_pre=True)


@register_learner("mvpt")
class MVPT(TemplateClassLearner, _DeepVisualPrompts):
    """MVLPT's deep visual prompts with the frozen class prompts ``template``.

    Args:
        backbone: the frozen CLIP (or its build arguments); the image tower must be a ViT.
        class_names: class names, in label order.
        n_ctx: tokens per layer (16 in MVLPT's scripts).
        depth: prompted image layers counting the input (12: all of ViT-B/16); capped at the tower's.
        template: the class prompt (``"a photo of a {}."``: the official ``"a photo of a "`` prefix).
    """


    def __init__(self, backbone: PromptableCLIP | dict, class_names: Sequence[str], n_ctx: int = 16,
                 depth: int = 12, template: str = DEFAULT_TEMPLATE) -> None:
        super().__init__(backbone, class_names)
        self._init_visual(n_ctx, depth)
        self._hparams = dict(n_ctx=n_ctx, depth=depth, template=template)
        self.init_template(template)
        self.finish_init()

    def encode_images(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        prompts = self.image_prompts(self.vision_ctx, self.vision_deep)
        return self.backbone.encode_image(images, prompts, normalize=normalize)

    def hparams(self) -> dict:
        return dict(self._hparams)


def _project(width: int, dim: int) -> nn.Module:
    """A linear map between a tower's width and the shared space; the identity when they agree (as official)."""
    return nn.Identity() if width == dim else nn.Linear(width, dim)


@register_learner("mupt")
class MUPT(_DeepVisualPrompts):
    """MVLPT's unified prompts: text context and deep visual prompts coupled in a shared space.

    Args:
        backbone: the frozen CLIP (or its build arguments); the image tower must be a ViT.
        class_names: class names, in label order.
        n_ctx_text: text context vectors (4), N(0, 0.02^2).
        n_ctx_vision: visual tokens per layer (4).
        depth: prompted image layers counting the input (12); capped at the tower's.
        project_dim: width of the shared space (128).
        token_mixing: ``False`` reproduces the official coupling (each token attends only to
            itself); ``True`` lets the 4 + 4 x depth tokens attend to each other (a deviation).
        class_token_position: where the class name sits in the text context (``"middle"``).
    """


    def __init__(self, backbone: PromptableCLIP | dict, class_names: Sequence[str], n_ctx_text: int = 4,
                 n_ctx_vision: int = 4, depth: int = 12, project_dim: int = 128, token_mixing: bool = False,
                 class_token_position: str = "middle") -> None:
        super().__init__(backbone, class_names)
        if class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(f"class_token_position must be one of {', '.join(CLASS_TOKEN_POSITIONS)}, "
                             f"got {class_token_position!r}")
        check_text_tokens(self.backbone, n_ctx_text, "n_ctx_text", self.learner_name)
        self._init_visual(n_ctx_vision, depth, "n_ctx_vision")
        self._hparams = dict(n_ctx_text=n_ctx_text, n_ctx_vision=n_ctx_vision, depth=depth, project_dim=project_dim,
                             token_mixing=token_mixing, class_token_position=class_token_position)
        self.n_ctx = self.prompt_length = n_ctx_text
        self.n_ctx_vision = n_ctx_vision
        self.token_mixing = token_mixing
        self.class_token_position = class_token_position
        text_width, vision_width = self.backbone.text_width, self.backbone.vision_width
        self.ctx = nn.Parameter((torch.randn(n_ctx_text, text_width) * 0.02).to(self.device))
        self.text_down, self.text_up = _project(text_width, project_dim), _project(project_dim, text_width)
        self.vision_down, self.vision_up = _project(vision_width, project_dim), _project(project_dim, vision_width)
        self.coupler = ResidualAttentionBlock(project_dim, 1, act_layer=QuickGELU)  # CLIP's block, 1 layer, 1 head
        for module in (self.text_down, self.text_up, self.vision_down, self.vision_up, self.coupler):
            module.to(self.device)
        self.finish_init()

    def coupled_prompts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The text context ``(n_t, D_t)``, input-layer visual tokens ``(n_v, D_v)`` and deep visual
        tokens ``(depth - 1, n_v, D_v)`` after the shared-space coupling (they depend on no input)."""
        visual = torch.cat([self.vision_ctx[None], self.vision_deep])  # (depth, n_v, D_v)
        depth, n_v, width = visual.shape
        seq = torch.cat([self.text_down(self.ctx), self.vision_down(visual.reshape(depth * n_v, width))]).float()
        # official: every token its own length-1 sequence; token mixing: one sequence of all tokens
        seq = self.coupler(seq[None])[0] if self.token_mixing else self.coupler(seq[:, None])[:, 0]
        text = self.text_up(seq[: self.n_ctx])
        visual = self.vision_up(seq[self.n_ctx :]).reshape(depth, n_v, width)
        return text, visual[0], visual[1:]

    def encode_classes(self, image_features: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        text, _, _ = self.coupled_prompts()
        prompts = TextPrompts(insert=context_insertions(self.class_token_ids, text, self.class_token_position))
        return self.backbone.encode_text(self.class_token_ids, prompts, normalize=normalize)

    def encode_images(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        _, shallow, deep = self.coupled_prompts()
        return self.backbone.encode_image(images, self.image_prompts(shallow, deep), normalize=normalize)

    def hparams(self) -> dict:
        return dict(self._hparams)
