"""TPT: test-time prompt tuning by minimising the entropy of the averaged prediction.

Shu et al., "Test-Time Prompt Tuning for Zero-Shot Generalization in Vision-Language Models",
NeurIPS 2022. Per test image (episodic): the 64 views (:class:`~vlprompt.adapters.TPTViews`) are
scored, the 10% of lowest entropy (``int(64 x 0.1) = 6``) are kept, and one AdamW step (lr 5e-3,
PyTorch's default weight decay 0.01) minimises the entropy of their *averaged* probability over
the 4 text context tokens ("a photo of a", or a trained CoOp-style learner's own context). View 0
is then predicted with the tuned prompt, and prompt and optimizer state are reset.

``variant="image"`` tunes a copy of the image tower instead (the "TPT (encoder)" baseline of
RLCF's ``tune_cls_tpt.py``: 3 steps, lr 1e-5, weight decay 5e-4).
"""

from __future__ import annotations

import torch

from ..learners import PromptLearner
from ..registry import ADAPTERS
from .base import TestTimeAdapter, marginal_entropy
from .students import make_student

_DEFAULTS = {"prompt": dict(steps=1, lr=5e-3, weight_decay=0.01), "image": dict(steps=3, lr=1e-5, weight_decay=5e-4)}


@ADAPTERS.register_module(name="tpt")
class TPT(TestTimeAdapter):
    """Test-time prompt tuning.

    Args:
        learner: the learner whose text context is tuned (``variant="prompt"``), e.g.
            :func:`~vlprompt.adapters.default_prompt_learner` or a trained CoOp; for
            ``variant="image"`` the learner that gives the fixed class features.
        variant: ``"prompt"`` or ``"image"``.
        steps, lr, weight_decay: AdamW steps per sample; ``None`` takes the variant's published value.
        selection_p: fraction of confident views kept (0.1).
        episodic: reset after each sample (``False``: keep adapting over a stream).
        norm_only: image variant: tune only the normalisation layers.
    """

    method = "tpt"

    def __init__(
        self,
        learner: PromptLearner,
        *,
        variant: str = "prompt",
        steps: int | None = None,
        lr: float | None = None,
        weight_decay: float | None = None,
        selection_p: float = 0.1,
        episodic: bool = True,
        norm_only: bool = False,
    ) -> None:
        student = make_student(learner, variant, "TPT", norm_only)
        defaults = _DEFAULTS[variant]
        self.variant = variant
        super().__init__(
            student,
            steps=defaults["steps"] if steps is None else steps,
            lr=defaults["lr"] if lr is None else lr,
            weight_decay=defaults["weight_decay"] if weight_decay is None else weight_decay,
            selection_p=selection_p,
            episodic=episodic,
        )

    def objective(self, logits: torch.Tensor, index: int) -> torch.Tensor:
        """The entropy of the selected views' averaged probability."""
        return marginal_entropy(logits)
