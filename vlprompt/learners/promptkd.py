"""PromptKD: unsupervised prompt distillation from a larger prompted CLIP.

Li et al., "PromptKD: Unsupervised Prompt Distillation for Vision-Language Models", CVPR 2024 (official code:
zhengli97/PromptKD). The student is the image tower alone: deep visual prompts (``n_ctx`` tokens appended before
the pre-transformer LayerNorm, new ones at layers 1..depth-1, as IVLP's) and a projector (Linear E -> E_t,
BatchNorm, ReLU, Linear E_t -> E_t; E_t the teacher's embedding width) from its raw image feature into the
teacher's space. Its classes are the teacher's text features (computed once per class set, with no gradient): the
student never runs a text tower. It learns on unlabelled images: ``loss_kd = kd_weight * T^2 * KL(p_teacher ||
p_student) / (B C)`` with ``p = softmax(logits / T)``, the teacher's logits from its own prompted towers and
temperature, the student's from its own temperature (the sum over the batch *and* the classes divided by their
number, hence the published weight 1000). Labels are never read.

The teacher is a learned file of any learner (PromptSRC on ViT-L/14 as published; loaded without executing code),
a backbone's settings (a zero-shot teacher: ``template`` on its frozen towers, the toy world's ``toy-teacher``), or
a built learner (library use). It stays frozen, outside the student's parameters and checkpoints.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import ImagePrompts, PromptableCLIP
from .base import PromptLearner, register_learner
from .common import DEFAULT_TEMPLATE, check_image_tokens, image_prompt_tokens, layer_prompts


def build_teacher(teacher: PromptLearner | str | os.PathLike | Mapping[str, Any], class_names: Sequence[str],
                  template: str, device: torch.device) -> PromptLearner:
    """The frozen teacher: a built learner, a learned file (any registered learner), or a backbone's settings (its
    zero-shot classifier with ``template``)."""
    from .zsclip import ZeroShotCLIP

    if isinstance(teacher, PromptLearner):
        learner = teacher
    elif isinstance(teacher, (str, os.PathLike)):
        from ..learned import load_learner, read_learned  # the file layer: registered learners, no code run

        _, meta = read_learned(teacher)
        if isinstance(meta, dict) and isinstance(meta.get("learner"), dict) \
                and meta["learner"].get("type") == PromptKD.learner_name:
            raise ValueError(f"{teacher}: a PromptKD student cannot be a teacher (it has no text tower of its own)")
        learner = load_learner(teacher, device=device, class_names=list(class_names))
    elif isinstance(teacher, Mapping):
        learner = ZeroShotCLIP(dict(teacher), class_names, templates=template)
    else:
        raise TypeError(f"teacher must be a learned file, a backbone's settings or a learner, got {teacher!r:.200}")
    if learner.image_conditioned_text:
        raise ValueError(f"a PromptKD teacher needs class features of its own; {type(learner).__name__}'s depend on "
                         "the image")
    for param in learner.parameters():
        param.requires_grad_(False)
    return learner.to(device).eval()


@register_learner("promptkd")
class PromptKD(PromptLearner):
    """The student of prompt distillation.

    Args:
        backbone: the student CLIP (or its build arguments).
        class_names: class names, in label order.
        teacher: a learned file, a backbone's settings (zero-shot teacher) or a built learner (see the module).
        n_ctx: visual prompt tokens per layer (4).
        depth: layers with their own visual prompts (9: the input and layers 1..8).
        kd_weight: weight of the distillation loss (1000; the official script's comments give 200 for
            FGVC-Aircraft, Flowers and DTD).
        temperature: the softmax temperature T of both sides (1).
        template: the zero-shot teacher's prompt (a teacher given by its backbone's settings).
    """

    def __init__(
        self,
        backbone: PromptableCLIP | dict,
        class_names: Sequence[str],
        teacher: str | dict | PromptLearner | None = None,
        n_ctx: int = 4,
        depth: int = 9,
        kd_weight: float = 1000.0,
        temperature: float = 1.0,
        template: str = DEFAULT_TEMPLATE,
    ) -> None:
        super().__init__(backbone, class_names)
        self.require_vit()
        if teacher is None:
            raise ValueError("PromptKD needs a teacher: a learned file, a backbone's settings, or a learner")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        check_image_tokens(self.backbone, n_ctx, "n_ctx", self.learner_name)  # before anything is allocated
        teacher_model = build_teacher(teacher, self._init_class_names, template, self.device)
        mine, theirs = self.backbone.info.preprocess, teacher_model.backbone.info.preprocess
        if (mine.image_size, tuple(mine.mean), tuple(mine.std)) != \
                (theirs.image_size, tuple(theirs.mean), tuple(theirs.std)):
            raise ValueError(f"the teacher ({teacher_model.backbone.arch}) reads images as {theirs}, the student "
                             f"({self.backbone.arch}) as {mine}: they must see the same batch")
        object.__setattr__(self, "_teacher", teacher_model)  # not a submodule: frozen, never checkpointed
        self._hparams = dict(teacher=None if isinstance(teacher, PromptLearner) else
                             str(teacher) if isinstance(teacher, (str, os.PathLike)) else dict(teacher),
                             n_ctx=n_ctx, depth=depth, kd_weight=float(kd_weight),
                             temperature=float(temperature), template=template)
        self.kd_weight, self.temperature = float(kd_weight), float(temperature)
        self.vision_ctx, self.vision_deep, self.prompt_depth = image_prompt_tokens(self.backbone, n_ctx, depth)
        target = teacher_model.backbone.embed_dim
        self.projector = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(self.backbone.embed_dim, target)),
            ("norm", nn.BatchNorm1d(target)),
            ("relu", nn.ReLU()),
            ("linear2", nn.Linear(target, target)),
        ])).to(self.device)
        self.finish_init()

    @property
    def teacher(self) -> PromptLearner:
        return self._teacher

    def _apply(self, fn, recurse: bool = True):  # noqa: D102 - .to()/.cuda()/.half() move the teacher too
        super()._apply(fn, recurse)
        self._teacher._apply(fn, recurse)
        return self

    def set_classes(self, class_names: Sequence[str]) -> None:
        """Switch classes: the teacher's text features for them become the student's class features."""
        super().set_classes(class_names)
        self.teacher.set_classes(self.class_names)
        with torch.no_grad():
            self.register_buffer("teacher_class_features", self.teacher.eval().encode_classes(), persistent=False)

    # ------------------------------------------------------------------ features
    def image_prompts(self) -> ImagePrompts:
        return ImagePrompts(tokens=self.vision_ctx, deep=layer_prompts(self.vision_deep))

    def encode_images(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """The projector's output for the prompted image feature, in the teacher's space."""
        raw = self.backbone.encode_image(images, self.image_prompts(), normalize=False)
        projected = self.projector(raw.to(self.projector.linear1.weight.dtype))
        return F.normalize(projected, dim=-1) if normalize else projected

    def encode_classes(self, image_features: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        if not normalize:
            raise ValueError("PromptKD's class features are the teacher's, kept normalised")
        return self.teacher_class_features

    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's logits for the current classes (its towers, prompts and temperature)."""
        with torch.no_grad():
            return self.teacher.eval()(images)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, ce_logits=None) -> dict[str, torch.Tensor]:
        """``loss_kd`` alone: the labels are not used (the images are unlabelled)."""
        student = self.logits(self.encode_images(images), self.teacher_class_features)
        teacher = self.teacher_logits(images).to(student.dtype)
        t = self.temperature
        kl = F.kl_div(F.log_softmax(student / t, dim=-1), F.softmax(teacher / t, dim=-1), reduction="sum")
        return {"loss_kd": self.kd_weight * kl * t * t / student.numel()}

    # ------------------------------------------------------------------ state
    def hparams(self) -> dict:
        if self._hparams["teacher"] is None:
            raise ValueError("a PromptKD student built on a learner object cannot record its teacher; build it from "
                             "a learned file or a backbone's settings to save it")
        return dict(self._hparams)
