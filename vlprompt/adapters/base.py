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

What is tuned is a :class:`~vlprompt.adapters.students.Student` (:mod:`.students`): the text
context of a prompt learner (``PromptStudent``) or a copy of the image tower owned by the adapter
(``ImageEncoderStudent``). The shared backbone stays frozen and is never written to.

Speed: the views of a sample go through each tower in one batched call; when the image features
do not depend on the tuned tensors (text prompt tuning) they are computed once per sample, and each
step re-runs only the text tower.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch

from ..errors import ConfigError
from ..learners import PromptLearner
from .students import Student

__all__ = ["TestTimeAdapter", "check_views", "confident_views", "marginal_entropy", "saved_tensor", "view_entropy"]


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


def check_views(views: torch.Tensor, adapter: str, device: torch.device) -> torch.Tensor:
    """One sample's views on ``device``, after checking they are a float ``(V, 3, S, S)`` tensor."""
    if not isinstance(views, torch.Tensor) or not views.is_floating_point() or views.dim() != 4:
        got = tuple(views.shape) if isinstance(views, torch.Tensor) else type(views).__name__
        raise ValueError(f"{adapter}: expected one sample's views as a float (V, 3, S, S) tensor "
                         f"(view 0 the original; see vlprompt.adapters.TPTViews), got {got}")
    return views.to(device)


def saved_tensor(state: dict[str, torch.Tensor], key: str, like: torch.Tensor) -> torch.Tensor:
    """``state[key]`` on ``like``'s device and dtype: an adapter's saved state read back (``carried_state``); a
    tensor missing or of another shape is a ``ValueError`` naming it."""
    if key not in state:
        raise ValueError(f"the adapter's saved state has no {key!r}")
    if tuple(state[key].shape) != tuple(like.shape):
        raise ValueError(f"the adapter's saved state {key!r} has shape {tuple(state[key].shape)}, "
                         f"expected {tuple(like.shape)}")
    return state[key].to(device=like.device, dtype=like.dtype)


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

    @property
    def keeps_state(self) -> bool:
        """Whether what it learns from one sample carries to the next (``episodic=False``, a momentum buffer):
        its predictions then depend on the samples before, and a stopped run goes on only from
        :meth:`carried_state`."""
        return not self.episodic or self.momentum is not None

    def carried_state(self) -> dict[str, torch.Tensor]:
        """What carries from one sample to the next, between samples, as tensors (a file can hold them):
        the sample counts, and the momentum buffer and reset point, or the tuned tensors and the optimizer's
        state (``episodic=False``). Empty when nothing carries. :meth:`load_carried_state` puts it back."""
        if not self.keeps_state:
            return {}
        state = {"samples_seen": torch.tensor(self.samples_seen), "since_update": torch.tensor(self._since_update)}
        if self.momentum is not None:
            state.update({f"reset.{k}": v for k, v in self._reset_point.items()})
            state.update({f"ema.{k}": v for k, v in self._ema.items()})
        if not self.episodic:
            state.update({f"student.{k}": v.detach() for k, v in self.student.state().items()})
            for index, moments in self.optimizer.state_dict()["state"].items():
                state.update({f"optimizer.{index}.{k}": torch.as_tensor(v) for k, v in moments.items()})
        return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}

    def load_carried_state(self, state: dict[str, torch.Tensor]) -> None:
        """Go on from :meth:`carried_state` (of an adapter built the same way); a tensor missing or of another
        shape is a ``ValueError`` naming it."""
        def take(key: str, like: torch.Tensor) -> torch.Tensor:
            return saved_tensor(state, key, like)

        if not self.keeps_state:
            return
        counts = torch.zeros((), dtype=torch.long)
        self.samples_seen = int(take("samples_seen", counts))
        self._since_update = int(take("since_update", counts))
        if self.momentum is not None:
            self._reset_point = {k: take(f"reset.{k}", v) for k, v in self._start.items()}
            self._ema = {k: take(f"ema.{k}", v) for k, v in self._start.items()}
        if self.episodic:
            self.reset()  # the tuned tensors at the (restored) reset point
            return
        with torch.no_grad():
            for key, tensor in self.student.state().items():
                tensor.copy_(take(f"student.{key}", tensor))
        saved = self.optimizer.state_dict()
        moments = {}
        for group in saved["param_groups"]:
            for index in group["params"]:
                keys = {k.split(".", 2)[2] for k in state if k.startswith(f"optimizer.{index}.")}
                if keys:
                    moments[index] = {k: state[f"optimizer.{index}.{k}"].to(self.device)
                                      if k != "step" else state[f"optimizer.{index}.{k}"] for k in keys}
        self.optimizer.load_state_dict({"state": moments, "param_groups": saved["param_groups"]})

    # ------------------------------------------------------------------ the loop
    def objective(self, logits: torch.Tensor, index: int) -> torch.Tensor:
        """The loss of the selected views' logits ``(k, C)`` (subclasses)."""
        raise NotImplementedError

    def selects_views(self, n_views: int) -> bool:
        """Whether a sample of ``n_views`` views is cut to its most confident ones (``selection_p``): when it
        adapts at all."""
        return self.steps > 0

    def on_selection(self, views: torch.Tensor, selected: torch.Tensor, index: int) -> None:
        """Called once per sample with the selected view indices (RLCF's teacher runs here)."""

    def check_views(self, views: torch.Tensor) -> torch.Tensor:
        """The views on the student's device, after checking their shape."""
        return check_views(views, type(self).__name__, self.device)

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

