"""KgCoOp: CoOp with its class features kept close to hand-crafted CLIP ones.

Yao et al., "Visual-Language Prompt Tuning with Knowledge-guided Context Optimization", CVPR 2023.
The learned prompts are CoOp's (4 context vectors from "a photo of a"). The loss adds
``w * (1 - mean_c cos(t_c, t_c^clip))``, where ``t_c`` is the learned class feature and
``t_c^clip`` the frozen CLIP feature of the dataset's hand-crafted template for class ``c``
(``get_template(dataset, "kgcoop")``), with ``w = 8``. Keeping the learned features near the
general knowledge of the template is what preserves accuracy on unseen classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..backbones import PromptableCLIP
from .base import register_learner
from .common import DEFAULT_TEMPLATE, class_text_features
from .coop import CoOp


@register_learner("kgcoop")
class KgCoOp(CoOp):
    """Knowledge-guided context optimisation.

    Args:
        backbone: the frozen CLIP (or its build arguments).
        class_names: class names, in label order.
        n_ctx, ctx_init, class_specific, class_token_position: CoOp's context (the published
            setting: 4 shared vectors from "a photo of a", class token at the end).
        w: weight of the knowledge-guided term ``loss_kg`` (8.0 in the published scripts).
        template: the hand-crafted template whose frozen CLIP features the learned class
            features are pulled towards, e.g. ``get_template("dtd", "kgcoop")``.
    """

    def __init__(
        self,
        backbone: PromptableCLIP | dict,
        class_names: Sequence[str],
        n_ctx: int = 4,
        ctx_init: str | None = "a photo of a",
        class_specific: bool = False,
        class_token_position: str = "end",
        w: float = 8.0,
        template: str = DEFAULT_TEMPLATE,
    ) -> None:
        # Set before CoOp's __init__, whose last step (set_classes) encodes the template.
        self.w = float(w)
        self.template = template
        super().__init__(backbone, class_names, n_ctx=n_ctx, ctx_init=ctx_init, class_specific=class_specific,
                         class_token_position=class_token_position)

    def set_classes(self, class_names: Sequence[str]) -> None:
        """Switch classes and re-encode the template for them with the frozen CLIP."""
        super().set_classes(class_names)
        # a buffer, so .to()/.cuda() move it; not persistent: it is rebuilt, never checkpointed
        feats = class_text_features(self.backbone, self.class_names, self.template)
        self.register_buffer("clip_class_features", feats, persistent=False)

    def extra_losses(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        image_features: torch.Tensor,
        class_features: torch.Tensor,
        logits: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """``loss_kg = w * (1 - mean cosine)`` between learned and hand-crafted class features."""
        target = self.clip_class_features.to(class_features.dtype)
        cos = F.cosine_similarity(class_features, target, dim=-1, eps=1e-7)
        return {"loss_kg": self.w * (1.0 - cos.mean())}

    def hparams(self) -> dict:
        return {**super().hparams(), "w": self.w, "template": self.template}
