"""What a test-time adapter tunes: a :class:`Student`.

The text context of a prompt learner (:class:`PromptStudent`) or a copy of the image tower owned by
the adapter (:class:`ImageEncoderStudent`); :func:`make_student` picks one for a method's variant.
The adapter's loop is :class:`vlprompt.adapters.base.TestTimeAdapter`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from ..backbones import PromptableCLIP
from ..errors import ConfigError
from ..learners import CoOp, PromptLearner

__all__ = ["ImageEncoderStudent", "PromptStudent", "Student", "default_prompt_learner", "make_student"]


class Student:
    """What an adapter tunes, and how it turns one sample's views into logits."""

    #: the tensors the optimizer steps
    trainable: list[nn.Parameter]

    def state(self) -> dict[str, torch.Tensor]:
        """The live tensors that make up the reset point (tuned parameters, and buffers they change)."""
        raise NotImplementedError

    def begin(self, views: torch.Tensor) -> None:
        """Start a sample: keep its views and whatever depends on them only."""
        raise NotImplementedError

    def logits(self, rows: torch.Tensor | None) -> torch.Tensor:
        """Logits of the views at ``rows`` (all views for ``None``), for the current parameters.

        All-view logits may come without autograd (they only serve the selection); the adapter
        then asks again for the selected rows.
        """
        raise NotImplementedError

    def predict(self) -> torch.Tensor:
        """Logits ``(1, C)`` of view 0."""
        raise NotImplementedError

    def end(self) -> None:
        """Drop the sample's caches."""

    def adapting(self, mode: bool) -> None:
        """Switch modules to their adaptation (``True``) or prediction mode."""

    @property
    def device(self) -> torch.device:
        raise NotImplementedError


def default_prompt_learner(backbone: PromptableCLIP, class_names: Sequence[str]) -> CoOp:
    """TPT's and RLCF's prompt: 4 context tokens from "a photo of a" in front of the class name."""
    return CoOp(backbone, class_names, n_ctx=4, ctx_init="a photo of a")


class PromptStudent(Student):
    """The text context tokens (``ctx``) of a prompt learner, everything else frozen.

    Works with every learner that has text context: CoOp, KgCoOp, CoCoOp, MaPLe, IVLP, PromptSRC.
    The learner's other parameters (deep prompts, image prompts, Meta-Net, couplings) are frozen
    (``requires_grad=False``) for as long as the adapter uses it.

    * CoCoOp: the context is conditioned on view 0's image feature and the Meta-Net's bias is then
      held fixed for the sample, so the tuned quantity is the generated context, as in TPT's
      CoCoOp variant (weight decay acts on the shared context).
    * MaPLe: its image prompts are computed from the text context, so the image features of the
      views depend on what is tuned and are recomputed at every step (found by autograd: the image
      features are cached whenever they do not require grad).
    """

    def __init__(self, learner: PromptLearner, method: str = "prompt tuning") -> None:
        ctx = getattr(learner, "ctx", None)
        if not isinstance(ctx, nn.Parameter):
            raise ConfigError(
                f"{method}: the learner {type(learner).__name__} ({getattr(learner, 'learner_name', '?')!r}) has no "
                "text context tokens to tune; use a learner with a `ctx` parameter (coop, kgcoop, cocoop, maple, "
                "ivlp, promptsrc), e.g. vlprompt.adapters.default_prompt_learner(backbone, class_names)"
            )
        self.learner = learner
        for p in learner.parameters():
            p.requires_grad_(p is ctx)
        self.trainable = [ctx]
        self._views: torch.Tensor | None = None
        self._features: torch.Tensor | None = None
        self._depends = False
        self._condition: torch.Tensor | None = None
        #: the normalised class features ``(C, E)`` of the last :meth:`logits` (in its graph: a loss may use them)
        self.last_class_features: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.learner.device

    def state(self) -> dict[str, torch.Tensor]:
        return {"ctx": self.trainable[0]}

    def begin(self, views: torch.Tensor) -> None:
        self._views = views
        with torch.enable_grad():
            features = self.learner.encode_images(views)
        self._depends = features.requires_grad
        self._features = features if self._depends else features.detach()
        if self.learner.image_conditioned_text:
            self._condition = features[:1].detach()

    def _image_features(self, rows: torch.Tensor | None) -> torch.Tensor:
        if not self._depends:
            return self._features if rows is None else self._features[rows]
        if rows is None and self._features is not None:  # the first step: use the batch encoded in begin()
            features, self._features = self._features, None
            return features
        return self.learner.encode_images(self._views if rows is None else self._views[rows])

    def _class_features(self) -> torch.Tensor:
        if self._condition is not None:
            return self.learner.encode_classes(self._condition)[0]
        return self.learner.encode_classes()

    def logits(self, rows: torch.Tensor | None) -> torch.Tensor:
        image = self._image_features(rows)
        self.last_class_features = self._class_features()
        return self.learner.logits(image, self.last_class_features.to(image.dtype))

    def predict(self) -> torch.Tensor:
        image = self.learner.encode_images(self._views[:1]) if self._depends else self._features[:1]
        return self.learner.logits(image, self._class_features().to(image.dtype))

    def end(self) -> None:
        self._views = self._features = self._condition = self.last_class_features = None


def _backbone_with_visual(backbone: PromptableCLIP, visual: nn.Module) -> PromptableCLIP:
    """A :class:`PromptableCLIP` that runs ``visual`` as its image tower and shares everything else.

    The open_clip model is copied shallowly: the text tower and the top-level tensors are the
    shared backbone's own objects; only the ``visual`` entry differs.
    """
    shared = backbone.model
    model = copy.copy(shared)
    model._modules = {**shared._modules, "visual": visual}
    model._parameters = dict(shared._parameters)
    model._buffers = dict(shared._buffers)
    return PromptableCLIP(model, backbone.info)


_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


class ImageEncoderStudent(Student):
    """A copy of the image tower, owned by the adapter and tuned; the class features stay fixed.

    RLCF's image-encoder TTA (and TPT's on the image encoder). The class features are the
    learner's (``"a photo of a {class}."`` with :class:`~vlprompt.learners.ZeroShotCLIP`), computed
    once per class set with the frozen text tower. ``norm_only`` tunes only the normalisation layers
    (LayerNorm for a ViT). As in the official code the tower is in training mode while it adapts
    (this changes only BatchNorm towers: batch statistics) and in eval mode for the prediction.

    Without BatchNorm the views' logits for the selection come from a no-grad pass over all views
    and the selected views are encoded again with autograd (the same numbers, a fraction of the
    backward cost); with BatchNorm the batch statistics depend on the batch, so the first step
    back-propagates through the all-view batch, as the official code does.
    """

    def __init__(self, learner: PromptLearner, norm_only: bool = False, method: str = "image-encoder TTA") -> None:
        name = type(learner).__name__
        if type(learner).encode_images is not PromptLearner.encode_images:
            raise ConfigError(f"{method}: {name} prompts the image tower; the image-encoder variant tunes a copy of "
                              "the plain image tower (use zsclip, coop, kgcoop or the prompt variant)")
        if learner.image_conditioned_text:
            raise ConfigError(f"{method}: {name}'s class features depend on the image; the image-encoder variant needs "
                              "fixed class features (use zsclip, coop or kgcoop)")
        self.learner = learner
        backbone = learner.backbone
        self.visual = copy.deepcopy(backbone.model.visual)
        self.clip = _backbone_with_visual(backbone, self.visual)
        self.norm_only = bool(norm_only)
        self.visual.requires_grad_(False)
        modules = [m for m in self.visual.modules() if isinstance(m, _NORMS)] if norm_only else [self.visual]
        self.trainable = list(dict.fromkeys(p for m in modules for p in m.parameters()))
        if not self.trainable:
            raise ConfigError(f"{method}: the image tower of {backbone.arch} has no normalisation layers to tune")
        for p in self.trainable:
            p.requires_grad_(True)
        self._batch_statistics = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.visual.modules())
        self._text_key: tuple | None = None
        self._text: torch.Tensor | None = None
        self._views: torch.Tensor | None = None
        self.adapting(False)

    @property
    def device(self) -> torch.device:
        return self.learner.device

    def state(self) -> dict[str, torch.Tensor]:
        """The tuned parameters and the tower's buffers (BatchNorm statistics move in training mode)."""
        tuned = {id(p) for p in self.trainable}
        state = {k: p for k, p in self.visual.named_parameters() if id(p) in tuned}
        state.update(self.visual.named_buffers())
        return state

    def class_features(self) -> torch.Tensor:
        """The learner's class features for its current class set (computed once per class set)."""
        key = tuple(self.learner.class_names)
        if key != self._text_key:
            with torch.no_grad():
                self._text = self.learner.encode_classes().detach()
            self._text_key = key
        return self._text

    def adapting(self, mode: bool) -> None:
        self.visual.eval()
        if mode:
            for m in ([m for m in self.visual.modules() if isinstance(m, _NORMS)] if self.norm_only else [self.visual]):
                m.train()

    def begin(self, views: torch.Tensor) -> None:
        self._views = views
        self.class_features()

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        image = self.clip.encode_image(images, normalize=True)
        return self.learner.logits(image, self._text.to(image.dtype))

    def logits(self, rows: torch.Tensor | None) -> torch.Tensor:
        if rows is None and not self._batch_statistics:
            with torch.no_grad():
                return self._logits(self._views)
        return self._logits(self._views if rows is None else self._views[rows])

    def predict(self) -> torch.Tensor:
        return self._logits(self._views[:1])

    def end(self) -> None:
        self._views = None


def make_student(learner: PromptLearner, variant: str, method: str, norm_only: bool = False) -> Student:
    """The student of a variant: ``"prompt"`` (text context) or ``"image"`` (a copy of the image tower)."""
    if variant == "prompt":
        if norm_only:
            raise ConfigError(f"{method}: norm_only applies to variant='image' only")
        return PromptStudent(learner, method)
    if variant == "image":
        return ImageEncoderStudent(learner, norm_only=norm_only, method=method)
    raise ConfigError(f"{method}: variant must be 'prompt' or 'image', got {variant!r}")
