"""PromptSRC: IVLP prompts trained with three self-regularising constraints.

Khattak, Wasim et al., "Self-regulating Prompts: Foundational Model Adaptation without
Forgetting", ICCV 2023. The prompts are IVLP's (4 text + 4 image tokens, depth 9 in each tower);
the loss keeps the prompted model close to the frozen CLIP:

* ``loss_scl_text = 25 * mean |t_c - t_c^zs|`` over the C x E elements, with ``t_c`` the
  normalised prompted class feature and ``t_c^zs`` the normalised *mean of the raw* frozen text
  features of class ``c`` over the 60 ImageNet templates (the published "textual diversity");
* ``loss_scl_image = 10 * mean |f - f^zs|`` over the B x E elements, with ``f^zs`` the normalised
  frozen image feature of the same (augmented) image;
* ``loss_scl_logits = sum KL(softmax(z^zs) || softmax(z)) / (B * C)``: the zero-shot logits
  ``z^zs = scale * f^zs . t^zs`` as the target distribution, the sum over the batch and classes
  divided by the number of logits (the published reduction), temperature 1.

The frozen image feature comes from the same backbone run without prompts (the published code
keeps a second copy of the image tower for it). The text targets are computed when first needed
in training for the current class set, and again whenever the class set changes.

Gaussian prompt aggregation over epochs is :class:`vlprompt.learners.promptsrc.gpa.GaussianPromptAggregation`,
a training hook (see ``configs/promptsrc``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ...backbones import PromptableCLIP
from ...datasets.templates import IMAGENET_TEMPLATES
from ..base import register_learner
from ..common import prompt_class_name
from ..ivlp import IVLP


@torch.no_grad()
def template_ensemble(
    backbone: PromptableCLIP, class_names: Sequence[str], templates: Sequence[str], chunk_size: int = 1000
) -> torch.Tensor:
    """``(C, E)`` fp32 mean over ``templates`` of the raw (unnormalised) frozen text features.

    Runs outside autocast, in chunks of ``chunk_size`` prompts (1000 classes x 60 templates fit);
    class names go through :func:`~vlprompt.learners.common.prompt_class_name` first.
    """
    texts = [t.replace("{}", prompt_class_name(name)) for name in class_names for t in templates]
    ids = backbone.tokenize(texts)
    device = backbone.device
    with torch.autocast(device_type=device.type, enabled=False):
        feats = torch.cat([backbone.encode_text(ids[i : i + chunk_size]).float()
                           for i in range(0, len(ids), chunk_size)])
    return feats.reshape(len(class_names), len(templates), -1).mean(dim=1)


@register_learner("promptsrc")
class PromptSRC(IVLP):
    """IVLP prompts with PromptSRC's mutual-agreement and textual-diversity regularisers.

    Args:
        backbone, class_names, n_ctx_text, n_ctx_vision, ctx_init, text_depth, vision_depth: the
            IVLP prompts (published: 4 + 4 tokens from "a photo of a", depth 9 / 9; 3 / 3 for
            cross-dataset and domain generalization).
        text_loss_weight: weight of ``loss_scl_text`` (25).
        image_loss_weight: weight of ``loss_scl_image`` (10).
        logits_loss_weight: weight of ``loss_scl_logits`` (1).
        templates: the templates whose mean frozen features are the text targets (``None``: the
            60 ImageNet templates of the published code).
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
        text_loss_weight: float = 25.0,
        image_loss_weight: float = 10.0,
        logits_loss_weight: float = 1.0,
        templates: Sequence[str] | None = None,
    ) -> None:
        self.text_loss_weight = float(text_loss_weight)
        self.image_loss_weight = float(image_loss_weight)
        self.logits_loss_weight = float(logits_loss_weight)
        self._templates = None if templates is None else list(templates)
        self.templates = list(IMAGENET_TEMPLATES) if templates is None else list(templates)
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError("templates must be a non-empty list of strings with a '{}' for the class name")
        super().__init__(backbone, class_names, n_ctx_text=n_ctx_text, n_ctx_vision=n_ctx_vision,
                         ctx_init=ctx_init, text_depth=text_depth, vision_depth=vision_depth)
        # mean raw frozen text features of the class set in _target_names (rebuilt, never saved)
        self.register_buffer("text_targets_raw", torch.zeros(0), persistent=False)
        self._target_names: list[str] | None = None

    def text_targets(self) -> torch.Tensor:
        """Normalised ``(C, E)`` frozen text targets of the current classes.

        The raw template means are computed once per class set (in training, when first needed)
        and kept in :attr:`text_targets_raw`.
        """
        if self._target_names != self.class_names:
            self.text_targets_raw = template_ensemble(self.backbone, self.class_names, self.templates)
            self._target_names = list(self.class_names)
        return F.normalize(self.text_targets_raw, dim=-1)

    def extra_losses(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        image_features: torch.Tensor,
        class_features: torch.Tensor,
        logits: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        targets = self.text_targets()
        with torch.no_grad():  # the frozen CLIP: the same backbone, without prompts
            zs_image = self.backbone.encode_image(images)
        with torch.autocast(device_type=zs_image.device.type, enabled=False):  # the terms in fp32
            zs_image = F.normalize(zs_image.float(), dim=-1)
            zs_logits = self.backbone.logit_scale.float() * zs_image @ targets.float().t()
            text = F.l1_loss(class_features.float(), targets.float())
            image = F.l1_loss(image_features.float(), zs_image)
            # KL(p_zs || p), summed over the batch and classes and divided by their product
            kl = F.kl_div(F.log_softmax(logits.float(), dim=1), F.log_softmax(zs_logits, dim=1),
                          reduction="sum", log_target=True) / logits.numel()
        return {
            "loss_scl_text": self.text_loss_weight * text,
            "loss_scl_image": self.image_loss_weight * image,
            "loss_scl_logits": self.logits_loss_weight * kl,
        }

    def hparams(self) -> dict:
        return {**super().hparams(), "text_loss_weight": self.text_loss_weight,
                "image_loss_weight": self.image_loss_weight, "logits_loss_weight": self.logits_loss_weight,
                "templates": self._templates}
