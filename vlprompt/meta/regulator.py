"""Gradient regulators: what turns a prompt parameter's raw gradient into the step GRAM takes.

GRAM (Li et al., ICCV 2023) meta-learns "a lightweight gradient regulating function" next to the
prompt initialisation. The paper's text about its form was not available to us, so the form is a
setting (``regulator=dict(type=...)``), reimplemented from the paper's description:

* ``gate`` (default): an element-wise gate computed from the gradient itself,
  ``R(g) = 2 sigmoid(a * |g| / rms(g) + b) * g``, with ``a`` and ``b`` of the parameter's shape. It starts
  at the identity (``a = b = 0`` gives a gate of exactly 1), so meta-training starts from plain
  fine-tuning; the gate can damp or amplify each prompt coordinate up to 2x, and through ``a`` react to
  how large that coordinate's gradient is relative to the others. It reads the magnitude, not the sign,
  so ``R(-g) = -R(g)``: a gate that read the sign moved the prompt along a fixed direction at every step
  whatever the loss (zero-mean gradient noise drifted it), which a 5-step inner loop rewards and a
  500-step fine-tuning pays for (CoOp's base accuracy on toy-hues fell from 71 to 37). Dividing by the
  root mean square makes the gate blind to the loss scale (mixed precision) and the learning rate, and
  ``R`` is linear in the gradient's scale, so it composes with any optimizer. ``from_gradient=False``
  drops ``a``: a learned per-coordinate step size (Meta-SGD-like).
* ``identity``: ``R(g) = g`` (the same tensor): a GRAM-wrapped run is then plain training, bit for bit.

Regulators are registered by name; a meta-trained file can only name a registered one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ..registry import REGULATORS


def register_regulator(name: str) -> Callable[[type], type]:
    """Register a :class:`GradientRegulator` as ``name`` (in :data:`REGULATORS`) and set its ``regulator_name``."""
    def deco(cls: type) -> type:
        cls.regulator_name = name
        return REGULATORS.register_module(name=name, force=True, module=cls)
    return deco


def _key(name: str) -> str:
    return name.replace(".", "__")  # parameter names hold dots; module keys cannot


class GradientRegulator(nn.Module):
    """``R(name, grad)`` for each prompt parameter ``name`` of one learner (whose shapes it was built for)."""

    regulator_name: ClassVar[str] = ""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.shapes = {name: tuple(shape) for name, shape in shapes.items()}

    def forward(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def is_identity(self) -> bool:
        return False

    def settings(self) -> dict[str, Any]:
        """Constructor settings besides the shapes (what a meta-trained file records)."""
        return {}


@register_regulator("identity")
class IdentityRegulator(GradientRegulator):
    """The raw gradient, unchanged (the very tensor)."""

    def forward(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        return grad

    @property
    def is_identity(self) -> bool:
        return True


@register_regulator("gate")
class GateRegulator(GradientRegulator):
    """Element-wise gate ``2 sigmoid(a * |g| / rms(g) + b)`` on each gradient, identity at ``a = b = 0``.

    Args:
        shapes: the prompt parameters' shapes, by name.
        from_gradient: the gate reads the (normalised) gradient; ``False``: a learned per-coordinate
            scale ``2 sigmoid(b)`` only.
        eps: added to the root mean square.
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], from_gradient: bool = True, eps: float = 1e-12) -> None:
        super().__init__(shapes)
        self.from_gradient, self.eps = bool(from_gradient), float(eps)
        self.bias = nn.ParameterDict({_key(n): nn.Parameter(torch.zeros(s)) for n, s in self.shapes.items()})
        self.weight = nn.ParameterDict(
            {_key(n): nn.Parameter(torch.zeros(s)) for n, s in self.shapes.items()} if self.from_gradient else {})

    def gate(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        """The multiplier applied to ``grad`` (in ``(0, 2)``)."""
        key = _key(name)
        logit = self.bias[key]
        if self.from_gradient:
            rms = grad.pow(2).mean().sqrt() + self.eps
            logit = logit + self.weight[key] * (grad.abs() / rms)
        return 2.0 * torch.sigmoid(logit)

    def forward(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        return self.gate(name, grad).to(grad.dtype) * grad

    def settings(self) -> dict[str, Any]:
        return {"from_gradient": self.from_gradient, "eps": self.eps}


def build_regulator(cfg: Mapping[str, Any] | str, shapes: Mapping[str, tuple[int, ...]]) -> GradientRegulator:
    """A registered regulator from ``dict(type=<name>, **settings)`` (or its name)."""
    cfg = {"type": cfg} if isinstance(cfg, str) else dict(cfg)
    name = cfg.pop("type", "gate")
    cls = REGULATORS.module_dict.get(name)
    if cls is None:
        raise KeyError(f"unknown gradient regulator {name!r}; registered: {', '.join(sorted(REGULATORS.module_dict))}")
    try:
        return cls(shapes, **cfg)
    except TypeError as err:
        raise TypeError(f"regulator {name!r}: {err}") from None
