"""RLCF: test-time adaptation with the reward of a frozen CLIP teacher (REINFORCE).

Zhao et al., "Test-Time Adaptation with CLIP Reward for Zero-Shot Generalization in
Vision-Language Models", ICLR 2024. The episodic loop and the confidence selection are TPT's
(:class:`~vlprompt.adapters.TestTimeAdapter`); the loss is a policy gradient:

* the policy is the student's softmax over the classes for each selected view; its "samples" are
  the view's top-``K`` classes (``K = 3``, deterministic);
* the reward of (view, class) is the teacher's CLIPScore ``2.5 x max(cos(image, text), 0)``
  between its feature of the view and of ``"a photo of a {class}."``;
* the baseline is the mean reward of the view's ``K`` samples (no division by the std);
* loss = mean over views x K of ``(reward - baseline) x CE(student logits, sampled class)``.

Following the official code: the selection is made once, at the first step, and reused; the
teacher encodes the selected (augmented, already normalised) views once per sample, resized
bicubically (``align_corners=True``) when its input size differs; its class text features are
computed once per class set. Here the teacher scores every class for the selected views once per
sample (an ``(k, C)`` matrix) and each step reads its samples' rewards from it.

Two variants, as published:

* ``variant="prompt"``: the 4 text context tokens (AdamW lr 7e-3, weight decay 5e-4, 3 steps;
  5 on the fine-grained sets, ``rlcf-prompt-fine.sh``);
* ``variant="image"``: a copy of the image tower owned by the adapter (lr 1e-5, weight decay 5e-4,
  3 steps), the class features fixed; ``norm_only`` tunes its LayerNorms only; ``momentum``
  gives RLCF-S-M's momentum buffer (the official scripts use 0.9998, every 64 samples, weight 1).

RLCF-S: several teachers, their scores averaged with weights normalised to sum 1 and rounded to
two decimals, as the official ``CLIPRewardsMultiple`` does (its confidences:
:data:`RLCF_S_CONFIDENCES`).

A teacher with random weights (``pretrained=None``) gives rewards that mean nothing: it is warned
of, naming it (:class:`~vlprompt.zeroshot.RandomWeightsWarning`), when the adapter is built.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..backbones import PromptableCLIP, build_clip
from ..errors import ConfigError, UserError
from ..learners import PromptLearner
from ..learners.common import class_text_features
from ..registry import ADAPTERS
from ..zeroshot import RandomWeightsWarning
from .base import TestTimeAdapter
from .students import make_student

__all__ = [
    "RLCF", "RLCF_S_CONFIDENCES", "CLIPReward", "CLIPTeacher", "NonFiniteRewardError", "clip_scores",
    "reinforce_loss", "sample_rewards",
]

#: RLCF-S's teacher confidences (the official ``CONFIDECES``), by vlprompt architecture name
RLCF_S_CONFIDENCES = {"ViT-L-14-336": 10.0, "ViT-L-14": 5.0, "RN50x64": 3.0, "ViT-B-16": 1.0}

_DEFAULTS = {"prompt": dict(steps=3, lr=7e-3), "image": dict(steps=3, lr=1e-5)}


class NonFiniteRewardError(UserError, FloatingPointError):
    """A teacher's reward is NaN or infinite (a broken image or teacher); the message names the sample."""


# ---------------------------------------------------------------------------------------- the math
def clip_scores(image_features: torch.Tensor, text_features: torch.Tensor, weight: float = 2.5) -> torch.Tensor:
    """CLIPScore ``weight x max(cos, 0)`` of every (image, text) pair, ``(n, C)``, from normalised features."""
    return weight * (image_features @ text_features.t()).clamp(min=0)


def sample_rewards(
    scores: torch.Tensor, sampled: torch.Tensor, baseline: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rewards ``(n, K)`` of each view's sampled classes and their baselines ``(n, 1)``.

    The baseline is the mean reward of the view's own samples (zero with ``baseline=False``).
    """
    rewards = scores.gather(1, sampled)
    base = rewards.mean(dim=1, keepdim=True) if baseline else torch.zeros_like(rewards[:, :1])
    return rewards, base


def reinforce_loss(logits: torch.Tensor, sampled: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """``mean((reward - baseline) x CE(logits, sampled class))`` over the ``(n, K)`` samples."""
    nll = -logits.log_softmax(dim=-1).gather(1, sampled)
    return (advantages.detach() * nll).mean()


# ----------------------------------------------------------------------------------------- teachers
class CLIPTeacher:
    """A frozen CLIP that scores (view, class) pairs; any registry backbone, with its own tokenizer.

    Args:
        backbone: a built :class:`PromptableCLIP`, or :func:`~vlprompt.backbones.build_clip`'s
            arguments (``{"name": "ViT-L-14", "pretrained": "openai"}``).
        template: the class prompt (underscores in class names become spaces).
    """

    def __init__(self, backbone: PromptableCLIP | Mapping[str, Any], template: str = "a photo of a {}.") -> None:
        if isinstance(backbone, Mapping):
            backbone = build_clip(**backbone)
        if not isinstance(backbone, PromptableCLIP):
            raise TypeError(f"a teacher is a PromptableCLIP or build_clip's arguments, got {type(backbone).__name__}")
        if "{}" not in template:
            raise ConfigError(f"the teacher's template needs a '{{}}' for the class name, got {template!r}")
        if backbone.info.pretrained is None:
            warnings.warn(f"RLCF teacher {backbone.arch} has random weights (pretrained=None): its CLIP reward means "
                          f"nothing and the adaptation follows noise; give the teacher weights (pretrained=<an "
                          f"open_clip tag, a packaged tag or a weights file>)", RandomWeightsWarning, stacklevel=3)
        self.backbone = backbone
        self.template = template
        self._text_key: tuple | None = None
        self._text: torch.Tensor | None = None

    @property
    def arch(self) -> str:
        return self.backbone.arch

    def class_features(self, class_names: Sequence[str]) -> torch.Tensor:
        """Normalised fp32 text features ``(C, E)`` of the class prompts, computed once per class set."""
        key = tuple(class_names)
        if key != self._text_key:
            self._text = class_text_features(self.backbone, key, self.template).float()
            self._text_key = key
        return self._text

    @torch.no_grad()
    def image_features(self, views: torch.Tensor) -> torch.Tensor:
        """Normalised fp32 features of views already normalised for the student, resized if needed."""
        views = views.to(self.backbone.device)
        size = self.backbone.image_size
        if views.shape[-1] != size or views.shape[-2] != size:
            views = F.interpolate(views, size=size, mode="bicubic", align_corners=True)
        return F.normalize(self.backbone.encode_image(views).float(), dim=-1)


class CLIPReward:
    """The reward of one teacher, or the weighted sum of several (RLCF-S).

    Args:
        teachers: one teacher or a list (each a :class:`CLIPTeacher`, a :class:`PromptableCLIP` or
            build arguments).
        weights: the teachers' confidences; ``None`` looks each architecture up in
            :data:`RLCF_S_CONFIDENCES` (several teachers) or uses 1 (one teacher). They are
            normalised to sum 1 and rounded to two decimals, as in the official code.
        clipscore_weight: the CLIPScore factor (2.5).
        template: the class prompt of teachers given as backbones.
    """

    def __init__(
        self,
        teachers: Any,
        weights: Sequence[float] | None = None,
        clipscore_weight: float = 2.5,
        template: str = "a photo of a {}.",
    ) -> None:
        if isinstance(teachers, (CLIPTeacher, PromptableCLIP, Mapping)):
            teachers = [teachers]
        if not isinstance(teachers, Sequence) or not teachers:
            raise ConfigError(f"RLCF needs at least one teacher, got {teachers!r}")
        self.teachers = [t if isinstance(t, CLIPTeacher) else CLIPTeacher(t, template) for t in teachers]
        if weights is None:
            if len(self.teachers) == 1:
                weights = [1.0]
            else:
                missing = [t.arch for t in self.teachers if t.arch not in RLCF_S_CONFIDENCES]
                if missing:
                    raise ConfigError(f"no RLCF-S confidence for teacher(s) {missing}; pass teacher_weights "
                                      f"(known: {RLCF_S_CONFIDENCES})")
                weights = [RLCF_S_CONFIDENCES[t.arch] for t in self.teachers]
        weights = [float(w) for w in weights]
        if len(weights) != len(self.teachers) or any(not w >= 0 or w == float("inf") for w in weights) \
                or sum(weights) <= 0:
            raise ConfigError(f"teacher_weights: expected {len(self.teachers)} finite non-negative numbers with a "
                              f"positive sum, got {weights!r}")
        self.weights = [1.0] if len(weights) == 1 else [round(w / sum(weights), 2) for w in weights]
        self.clipscore_weight = float(clipscore_weight)

    def scores(self, views: torch.Tensor, class_names: Sequence[str]) -> torch.Tensor:
        """``(n, C)`` rewards of every class for each view, on the views' device."""
        total = None
        for weight, teacher in zip(self.weights, self.teachers, strict=True):
            s = clip_scores(teacher.image_features(views), teacher.class_features(class_names), self.clipscore_weight)
            s = s.to(views.device)
            total = weight * s if total is None else total + weight * s
        return total


# ------------------------------------------------------------------------------------------ adapter
@ADAPTERS.register_module(name="rlcf")
class RLCF(TestTimeAdapter):
    """Test-time adaptation with CLIP reward.

    Args:
        learner: ``variant="prompt"``: the learner whose text context is tuned (e.g.
            :func:`~vlprompt.adapters.default_prompt_learner`, or a trained CoOp for "RLCF + CoOp");
            ``variant="image"``: the learner that gives the fixed class features (a
            :class:`~vlprompt.learners.ZeroShotCLIP` with "a photo of a {}." as published).
        teacher: the reward CLIP(s): see :class:`CLIPReward` (ViT-L/14 with OpenAI weights as published).
        teacher_weights: RLCF-S weights (see :class:`CLIPReward`).
        variant: ``"prompt"`` or ``"image"``.
        steps, lr: ``None`` takes the variant's published value (3 steps; lr 7e-3 / 1e-5).
        weight_decay: AdamW's (5e-4).
        selection_p: fraction of confident views kept (0.1).
        sample_k: classes sampled per view (3).
        baseline: subtract the mean reward of each view's samples.
        clipscore_weight: the CLIPScore factor (2.5).
        template: the teachers' class prompt.
        norm_only: image variant: tune the normalisation layers only.
        momentum, update_freq, update_w: RLCF-S-M's momentum buffer (see :class:`TestTimeAdapter`).
        episodic: reset after each sample (``False``: keep adapting over a stream).
    """

    method = "rlcf"

    def __init__(
        self,
        learner: PromptLearner,
        teacher: Any,
        *,
        teacher_weights: Sequence[float] | None = None,
        variant: str = "prompt",
        steps: int | None = None,
        lr: float | None = None,
        weight_decay: float = 5e-4,
        selection_p: float = 0.1,
        sample_k: int = 3,
        baseline: bool = True,
        clipscore_weight: float = 2.5,
        template: str = "a photo of a {}.",
        norm_only: bool = False,
        momentum: float | None = None,
        update_freq: int = 64,
        update_w: float = 1.0,
        episodic: bool = True,
    ) -> None:
        if not isinstance(sample_k, int) or isinstance(sample_k, bool) or sample_k < 1:
            raise ConfigError(f"RLCF: sample_k must be an int >= 1, got {sample_k!r}")
        student = make_student(learner, variant, "RLCF", norm_only)
        self.variant = variant
        self.reward = CLIPReward(teacher, teacher_weights, clipscore_weight, template)
        self.sample_k = sample_k
        self.baseline = bool(baseline)
        defaults = _DEFAULTS[variant]
        super().__init__(
            student,
            steps=defaults["steps"] if steps is None else steps,
            lr=defaults["lr"] if lr is None else lr,
            weight_decay=weight_decay,
            selection_p=selection_p,
            episodic=episodic,
            momentum=momentum,
            update_freq=update_freq,
            update_w=update_w,
        )
        self._scores: torch.Tensor | None = None
        #: per step of the last sample: the sampled classes, their rewards and baselines (detached)
        self.last_samples: list[torch.Tensor] = []
        self.last_rewards: list[torch.Tensor] = []
        self.last_baselines: list[torch.Tensor] = []

    def on_selection(self, views: torch.Tensor, selected: torch.Tensor, index: int) -> None:
        """The teacher scores every class for the selected views, once per sample."""
        self.last_samples, self.last_rewards, self.last_baselines = [], [], []
        names = self.learner.class_names
        if self.sample_k > len(names):
            raise ConfigError(f"RLCF: sample_k={self.sample_k} is more than the {len(names)} classes")
        scores = self.reward.scores(views[selected], names)
        if not bool(torch.isfinite(scores).all()):  # the one host read of a sample, before any update
            bad = ", ".join(f"{t.arch}" for t in self.reward.teachers)
            raise NonFiniteRewardError(
                f"RLCF: the teacher reward of sample {index} is not finite (teacher {bad}); check that image and "
                "the teacher's weights"
            )
        self._scores = scores

    def objective(self, logits: torch.Tensor, index: int) -> torch.Tensor:
        """REINFORCE with the teacher's reward on each view's top-K classes."""
        sampled = logits.detach().topk(self.sample_k, dim=-1).indices
        rewards, baselines = sample_rewards(self._scores, sampled, self.baseline)
        self.last_samples.append(sampled)
        self.last_rewards.append(rewards)
        self.last_baselines.append(baselines)
        return reinforce_loss(logits, sampled, rewards - baselines)
