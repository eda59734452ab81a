"""Episodic test-time adaptation: tune on one sample's views, predict its original view, reset.

TPT and RLCF share one loop (:class:`TestTimeAdapter`). For each test sample it gets the
``(V, 3, S, S)`` views of one image (view 0 is the original, see :mod:`.views`):

1. scores every view with the current parameters and keeps the most confident ones (the
   ``selection_p`` fraction of lowest prediction entropy), once, at the first step;
2. takes ``steps`` AdamW steps on the method's loss over the selected views;
3. predicts view 0 with the tuned parameters;
4. in episodic mode (the published setting), puts the parameters *and* the optimizer state back to
   the reset point, bit for bit, before the next sample. ``episodic=False`` keeps what was learned
   (a stream of samples from one domain).

What is tuned is a :class:`Student`: the text context of a prompt learner
(:class:`PromptStudent`) or a copy of the image tower owned by the adapter
(:class:`ImageEncoderStudent`). The shared backbone stays frozen and is never written to.

Speed: the views of a sample go through each tower in one batched call; when the image features
do not depend on the tuned tensors (text prompt tuning) they are computed once per sample, and each
step re-runs only the text tower.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from ..backbones import PromptableCLIP
from ..errors import ConfigError
from ..learners import CoOp, PromptLearner

__all__ = [
    "ImageEncoderStudent", "PromptStudent", "Student", "TestTimeAdapter", "confident_views", "default_prompt_learner",
    "make_student", "marginal_entropy", "view_entropy",
]


# ----------------------------------------------------------------------------------------- losses
def view_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each row's softmax, ``(V,)``."""
    return -(logits.softmax(dim=-1) * logits.log_softmax(dim=-1)).sum(dim=-1)


def confident_views(logits: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices of the ``int(V * fraction)`` views of lowest entropy, most confident first.

    The count is truncated as in the official TPT/RLCF code (``int(64 * 0.1) = 6``).
    """
    n = logits.shape[0]
    k = int(n * fraction)
    if k < 1:
        raise ConfigError(f"selection_p={fraction} keeps no view of {n} (int({n} x {fraction}) = 0); "
                          "pass more views or a larger selection_p")
    return torch.argsort(view_entropy(logits.detach()), stable=True)[:k]


def marginal_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the probability averaged over the rows (TPT's loss), computed in log space."""
    log_p = logits.log_softmax(dim=-1)
    log_mean = torch.logsumexp(log_p, dim=0) - torch.log(torch.tensor(float(log_p.shape[0]), dtype=log_p.dtype))
    log_mean = log_mean.clamp(min=torch.finfo(log_mean.dtype).min)
    return -(log_mean.exp() * log_mean).sum()


# --------------------------------------------------------------------------------------- students
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
        return self.learner.logits(image, self._class_features().to(image.dtype))

    def predict(self) -> torch.Tensor:
        image = self.learner.encode_images(self._views[:1]) if self._depends else self._features[:1]
        return self.learner.logits(image, self._class_features().to(image.dtype))

    def end(self) -> None:
        self._views = self._features = self._condition = None


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


# ---------------------------------------------------------------------------------------- adapter
class TestTimeAdapter:
    """The shared loop of episodic test-time adapters; subclasses give the loss.

    Args:
        student: what is tuned (:class:`PromptStudent` or :class:`ImageEncoderStudent`).
        steps: optimizer steps per sample (0 predicts without adapting).
        lr, weight_decay: AdamW's.
        selection_p: fraction of the views kept by confidence selection (``int(V * p)`` views).
        episodic: reset parameters and optimizer state after every sample (the published
            setting); ``False`` keeps adapting across samples.
        momentum: RLCF's momentum buffer (RLCF-S-M), episodic mode only: after each sample an EMA
            ``m * ema + (1 - m) * adapted`` of the adapted state is updated, and every
            ``update_freq`` samples the reset point becomes ``(1 - update_w) * start + update_w * ema``
            (``start``: the state at construction). ``None`` (the default) leaves the reset point fixed.
    """

    #: registry name (``ADAPTERS``)
    method: ClassVar[str] = ""

    def __init__(
        self,
        student: Student,
        *,
        steps: int,
        lr: float,
        weight_decay: float,
        selection_p: float = 0.1,
        episodic: bool = True,
        momentum: float | None = None,
        update_freq: int = 64,
        update_w: float = 1.0,
    ) -> None:
        name = type(self).__name__
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ConfigError(f"{name}: steps must be an int >= 0, got {steps!r}")
        if not lr > 0:
            raise ConfigError(f"{name}: lr must be > 0, got {lr!r}")
        if not 0 < selection_p <= 1:
            raise ConfigError(f"{name}: selection_p must lie in (0, 1], got {selection_p!r}")
        if momentum is not None:
            if not 0 <= momentum < 1:
                raise ConfigError(f"{name}: momentum must lie in [0, 1), got {momentum!r}")
            if not episodic:
                raise ConfigError(f"{name}: the momentum buffer moves the reset point; it needs episodic=True")
            if not isinstance(update_freq, int) or update_freq < 1:
                raise ConfigError(f"{name}: update_freq must be an int >= 1, got {update_freq!r}")
        self.student = student
        self.steps = steps
        self.selection_p = float(selection_p)
        self.episodic = bool(episodic)
        self.momentum, self.update_freq, self.update_w = momentum, update_freq, float(update_w)
        self.optimizer = torch.optim.AdamW(student.trainable, lr=lr, weight_decay=weight_decay)
        self._optimizer_start = copy.deepcopy(self.optimizer.state_dict())
        self._start = self._snapshot()
        self._reset_point = self._start
        self._ema = self._snapshot() if momentum is not None else None
        self._since_update = 0
        #: samples adapted so far (the default sample index of error messages)
        self.samples_seen = 0
        #: indices of the views selected for the last sample
        self.last_selected: torch.Tensor | None = None
        #: the loss of each step of the last sample (detached tensors: reading them is the caller's sync)
        self.last_losses: list[torch.Tensor] = []
        #: the logits ``(V, C)`` of all views at the first step of the last sample (detached)
        self.last_view_logits: torch.Tensor | None = None

    # ------------------------------------------------------------------ state
    @property
    def learner(self) -> PromptLearner:
        return self.student.learner

    @property
    def device(self) -> torch.device:
        return self.student.device

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.student.state().items()}

    def reset(self) -> None:
        """Put the tuned tensors and the optimizer state back to the reset point."""
        with torch.no_grad():
            for key, tensor in self.student.state().items():
                tensor.copy_(self._reset_point[key])
        self.optimizer.load_state_dict(copy.deepcopy(self._optimizer_start))
        self.optimizer.zero_grad(set_to_none=True)

    def restart(self) -> None:
        """Back to the state at construction: reset point, momentum buffer and sample count too."""
        self._reset_point = self._start
        self._ema = {k: v.clone() for k, v in self._start.items()} if self.momentum is not None else None
        self._since_update = 0
        self.samples_seen = 0
        self.reset()

    def _momentum_update(self) -> None:
        m, w = self.momentum, self.update_w
        with torch.no_grad():
            for key, tensor in self.student.state().items():
                if tensor.is_floating_point():
                    self._ema[key].mul_(m).add_(tensor.detach(), alpha=1 - m)
            self._since_update += 1
            if self._since_update >= self.update_freq:
                self._since_update = 0
                self._reset_point = {
                    k: ((1 - w) * self._start[k] + w * self._ema[k]) if v.is_floating_point() else v
                    for k, v in self._start.items()
                }

    # ------------------------------------------------------------------ the loop
    def objective(self, logits: torch.Tensor, index: int) -> torch.Tensor:
        """The loss of the selected views' logits ``(k, C)`` (subclasses)."""
        raise NotImplementedError

    def on_selection(self, views: torch.Tensor, selected: torch.Tensor, index: int) -> None:
        """Called once per sample with the selected view indices (RLCF's teacher runs here)."""

    def check_views(self, views: torch.Tensor) -> torch.Tensor:
        """The views on the student's device, after checking their shape."""
        if not isinstance(views, torch.Tensor) or not views.is_floating_point() or views.dim() != 4:
            got = tuple(views.shape) if isinstance(views, torch.Tensor) else type(views).__name__
            raise ValueError(f"{type(self).__name__}: expected one sample's views as a float (V, 3, S, S) tensor "
                             f"(view 0 the original; see vlprompt.adapters.TPTViews), got {got}")
        return views.to(self.device)

    def adapt(self, views: torch.Tensor, index: int | None = None) -> None:
        """Tune on one sample's views (no reset)."""
        index = self.samples_seen if index is None else index
        self.last_losses = []
        self.last_selected = self.last_view_logits = None
        student = self.student
        student.begin(views)
        student.adapting(True)
        try:
            selected = None
            for _ in range(self.steps):
                if selected is None:
                    logits = student.logits(None)
                    self.last_view_logits = logits.detach()
                    selected = confident_views(logits, self.selection_p)
                    self.last_selected = selected
                    self.on_selection(views, selected, index)
                    logits = logits[selected] if logits.requires_grad else student.logits(selected)
                else:
                    logits = student.logits(selected)
                loss = self.objective(logits, index)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.last_losses.append(loss.detach())
        finally:
            student.adapting(False)
            self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def predict(self) -> torch.Tensor:
        """Logits ``(1, C)`` of view 0 of the sample being adapted."""
        return self.student.predict()

    def __call__(self, views: torch.Tensor, index: int | None = None) -> torch.Tensor:
        """Adapt on one sample's views and return the logits ``(1, C)`` of its original view (view 0).

        ``index`` names the sample in error messages (default: the count of samples seen).
        """
        views = self.check_views(views)
        index = self.samples_seen if index is None else index
        try:
            self.adapt(views, index)
            logits = self.predict()
            if self.momentum is not None:
                self._momentum_update()
        finally:
            self.student.end()
            if self.episodic:
                self.reset()
            self.samples_seen += 1
        return logits

