"""Stage 1 of Similarity Min-Max: the darkening module, its losses and its training loop.

Luo et al., "Similarity Min-Max: Zero-Shot Day-Night Domain Adaptation", ICCV 2023. The darkening
module D is a Zero-DCE-style curve estimator: seven depthwise-separable 3x3 convolutions of 64
channels with skip concatenations (block 5 sees blocks 3 and 4, block 6 sees 2 and 5, block 7
sees 1 and 6) read the RGB image in [0, 1] and a constant exposure map E, and give a per-pixel
curve map A = tanh(.) and scale B in [min_scale, 1] (a sigmoid). The image is multiplied by B,
passed through the quadratic curve ``x + A (x^2 - x)`` ``curve_rounds`` times, and divided by B.

D is trained against a frozen model F to make the features of ``D(I, E)`` as unlike those of ``I``
as it can (the cosine similarity is *minimised*, weight 0.1), held to a plausible night image by
four regularisers: exposure control (the mean intensity of ``D(I, E)`` matches E; 10), colour
constancy (25), a loose total variation of A that lets edges through (1600, margin 0.02), and the
flexibility term ``1 - B`` (5). Adam, lr 1e-4, weight decay 1e-4, gradient norm clipped at 0.1, the
learning rate x0.1 at 1/3 and 2/3 of the epochs. The module works on [0, 1] pixels, before CLIP's
mean/std normalisation. The darkening module's forward and every loss term equal the official
code's (``tests/golden/official_smm.json``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..backbones import CheckpointError, check_tensors_fit, read_safetensors, save_safetensors

__all__ = [
    "DARKENING_ARCH", "DarkeningLoss", "DarkeningNet", "DarkeningSettings", "colour_constancy_loss",
    "check_exposure_range", "exposure_loss", "feature_similarity", "flexibility_loss", "load_darkening",
    "loose_tv_loss", "read_darkening_meta", "save_darkening", "train_darkening",
]

#: the architecture name recorded in a darkening checkpoint's metadata
DARKENING_ARCH = "smm-curve-v2"
_META_KEY = "vlprompt_darkening"


def check_exposure_range(value: Any, key: str) -> tuple[float, float]:
    """``(low, high)`` with ``0 <= low <= high <= 1``; anything else is a ``ValueError`` naming ``key``."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be two numbers (low, high) in [0, 1], got {value!r}") from None
    if not (0.0 <= low <= high <= 1.0) or not all(map(math.isfinite, (low, high))):
        raise ValueError(f"{key} = {value!r}: an exposure range must satisfy 0 <= low <= high <= 1 "
                         "(exposures are mean pixel intensities in [0, 1])")
    return low, high


class _SeparableConv(nn.Module):
    """A depthwise 3x3 convolution followed by a pointwise 1x1 one (both with bias)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class DarkeningNet(nn.Module):
    """The curve estimator D(I, E) of SMM (the paper's quadratic-curve "v2" module).

    Args:
        width: channels of the hidden blocks (64).
        curve_rounds: how many times the quadratic curve is applied (8).
        min_scale: lower end of the per-pixel scale B (0.95).
    """

    def __init__(self, width: int = 64, curve_rounds: int = 8, min_scale: float = 0.95) -> None:
        super().__init__()
        if width < 1 or curve_rounds < 1 or not 0.0 < min_scale <= 1.0:
            raise ValueError(f"DarkeningNet: width {width} and curve_rounds {curve_rounds} must be >= 1 and "
                             f"min_scale {min_scale} in (0, 1]")
        self.width, self.curve_rounds, self.min_scale = int(width), int(curve_rounds), float(min_scale)
        w = self.width
        ins = (4, w, w, w, w, 2 * w, 2 * w, 2 * w)  # RGB + exposure, then the skip concatenations
        outs = (w,) * 7 + (6,)  # 3 channels of A, 3 of B
        self.blocks = nn.ModuleList(_SeparableConv(i, o) for i, o in zip(ins, outs, strict=True))

    def arch(self) -> dict[str, Any]:
        """What a checkpoint records to be rebuilt (and checked) without code."""
        return {"arch": DARKENING_ARCH, "width": self.width, "curve_rounds": self.curve_rounds,
                "min_scale": self.min_scale}

    def curves(self, images: torch.Tensor, exposure: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """The curve map A in [-1, 1] and the scale B in [min_scale, 1], each ``(B, 3, H, W)``."""
        b, _, h, w = images.shape
        exposure = torch.as_tensor(exposure, dtype=images.dtype, device=images.device)
        exp_map = (exposure if exposure.dim() == 4 else exposure.reshape(-1, 1, 1, 1)).expand(b, 1, h, w)
        blocks = self.blocks
        x0 = F.relu(blocks[0](torch.cat([images, exp_map], dim=1)))
        x1 = F.relu(blocks[1](x0))
        x2 = F.relu(blocks[2](x1))
        x3 = F.relu(blocks[3](x2))
        x4 = F.relu(blocks[4](x3))
        x5 = F.relu(blocks[5](torch.cat([x3, x4], dim=1)))
        x6 = F.relu(blocks[6](torch.cat([x2, x5], dim=1)))
        out = blocks[7](torch.cat([x1, x6], dim=1))
        curve = torch.tanh(out[:, :3])
        scale = torch.sigmoid(out[:, 3:]) * (1.0 - self.min_scale) + self.min_scale
        return curve, scale

    def apply_curve(self, images: torch.Tensor, curve: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``images * B``, the quadratic curve ``curve_rounds`` times, then ``/ B``."""
        x = images * scale
        for _ in range(self.curve_rounds):
            x = x + curve * (x * x - x)
        return x / scale

    def forward(self, images: torch.Tensor, exposure: torch.Tensor | float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Darken ``images`` ``(B, 3, H, W)`` in [0, 1] towards ``exposure`` (a number, one per image
        ``(B,)`` / ``(B, 1, 1, 1)``, or a map ``(B, 1, H, W)``); returns the image, A and B."""
        curve, scale = self.curves(images, exposure)
        return self.apply_curve(images, curve, scale), curve, scale


# ----------------------------------------------------------------------------------------- losses
def exposure_loss(darkened: torch.Tensor, exposure: torch.Tensor | float, patch: int = 1) -> torch.Tensor:
    """Mean squared gap between the channel-mean intensity (averaged over ``patch`` x ``patch``
    patches) and the target exposure."""
    intensity = darkened.mean(dim=1, keepdim=True)
    if patch > 1:
        intensity = F.avg_pool2d(intensity, patch)
    exposure = torch.as_tensor(exposure, dtype=darkened.dtype, device=darkened.device)
    if exposure.dim() == 1:
        exposure = exposure.view(-1, 1, 1, 1)
    return ((intensity - exposure) ** 2).mean()


def colour_constancy_loss(images: torch.Tensor) -> torch.Tensor:
    """Zero-DCE's colour constancy: per image, the root of the summed squares of the squared
    differences between the mean R, G and B; averaged over the batch."""
    r, g, b = images.mean(dim=(2, 3)).unbind(dim=1)
    d_rg, d_rb, d_gb = (r - g) ** 2, (r - b) ** 2, (g - b) ** 2
    return torch.sqrt(d_rg ** 2 + d_rb ** 2 + d_gb ** 2).mean()


def loose_tv_loss(curve: torch.Tensor, margin: float = 0.02) -> torch.Tensor:
    """Total variation of the curve map that forgives large steps (edges): a neighbour difference
    ``d`` costs ``clamp(margin - | |d| - margin |, 0, 1)^2`` (largest at ``|d| = margin``, nothing at
    0 or beyond ``2 margin``), averaged per direction, summed over both, times 2 / batch."""
    def term(d: torch.Tensor) -> torch.Tensor:
        return (margin - (d.abs() - margin).abs()).clamp(0, 1).pow(2).sum()

    b, _, h, w = curve.shape
    dh = term(curve[:, :, 1:, :] - curve[:, :, :-1, :]) / ((h - 1) * w)
    dw = term(curve[:, :, :, 1:] - curve[:, :, :, :-1]) / (h * (w - 1))
    return 2 * (dh + dw) / b


def flexibility_loss(scale: torch.Tensor) -> torch.Tensor:
    """``mean(1 - B)``: the scale stays near 1 unless darkening needs it lower."""
    return (1 - scale).mean()


def feature_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity between matching rows of two feature batches."""
    return (F.normalize(a.flatten(1), dim=1) * F.normalize(b.flatten(1), dim=1)).sum(dim=1).mean()


@dataclass
class DarkeningSettings:
    """Stage-1 settings (the official ``darken_classification.py`` defaults)."""

    epochs: int = 15
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    grad_clip: float = 0.1
    exposure_range: tuple[float, float] = (0.0, 0.5)
    tv_margin: float = 0.02
    exposure_patch: int = 1
    weights: dict[str, float] = field(default_factory=lambda: dict(
        similarity=0.1, exposure=10.0, colour=25.0, tv=1600.0, flexibility=5.0))

    def __post_init__(self) -> None:
        self.exposure_range = check_exposure_range(self.exposure_range, "darkening.exposure_range")
        unknown = set(self.weights) - {"similarity", "exposure", "colour", "tv", "flexibility"}
        if unknown:
            raise ValueError(f"darkening.weights: unknown loss term(s) {sorted(unknown)}; the terms are similarity, "
                             "exposure, colour, tv, flexibility")
        self.weights = {**DarkeningSettings.__dataclass_fields__["weights"].default_factory(), **self.weights}
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"darkening: epochs ({self.epochs}) and batch_size ({self.batch_size}) must be >= 1")


class DarkeningLoss(nn.Module):
    """The stage-1 objective: weighted similarity (to minimise) plus the four regularisers.

    ``encode`` maps [0, 1] pixels to the frozen model's features (for CLIP: normalise, image tower).
    """

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], settings: DarkeningSettings | None = None
                 ) -> None:
        super().__init__()
        self.encode = encode
        self.settings = settings or DarkeningSettings()

    def forward(self, net: DarkeningNet, images: torch.Tensor, exposure: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named, weighted terms (their sum is the loss) for ``images`` darkened towards ``exposure``."""
        s, w = self.settings, self.settings.weights
        darkened, curve, scale = net(images, exposure)
        with torch.no_grad():
            day = self.encode(images)
        terms = {
            "similarity": w["similarity"] * feature_similarity(day, self.encode(darkened)),
            "exposure": w["exposure"] * exposure_loss(darkened, exposure, s.exposure_patch),
            "colour": w["colour"] * colour_constancy_loss(darkened),
            "tv": w["tv"] * loose_tv_loss(curve, s.tv_margin),
            "flexibility": w["flexibility"] * flexibility_loss(scale),
        }
        return terms


def train_darkening(net: DarkeningNet, encode: Callable[[torch.Tensor], torch.Tensor],
                    batches: Callable[[], Iterable[torch.Tensor]], settings: DarkeningSettings | None = None,
                    generator: torch.Generator | None = None, progress: bool = True,
                    log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``net`` (stage 1) on the [0, 1] image batches that ``batches()`` yields each epoch.

    Exposures are drawn per image from ``settings.exposure_range``; the learning rate drops x0.1
    after 1/3 and 2/3 of the epochs. Returns the per-epoch mean of each term and the seconds taken.
    """
    s = settings or DarkeningSettings()
    objective = DarkeningLoss(encode, s)
    optimizer = torch.optim.Adam(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    milestones = sorted({max(1, s.epochs // 3), max(1, 2 * s.epochs // 3)})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    low, high = s.exposure_range
    device = next(net.parameters()).device
    net.train()
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for epoch in range(s.epochs):
        sums: dict[str, float] = {}
        count = 0
        for images in tqdm(batches(), desc=f"stage 1 (darkening) epoch {epoch + 1}/{s.epochs}", disable=not progress,
                           leave=False):
            images = images.to(device).clamp(0, 1)
            exposure = torch.rand(images.shape[0], 1, 1, 1, generator=generator).to(device) * (high - low) + low
            terms = objective(net, images, exposure)
            loss = sum(terms.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), s.grad_clip)
            optimizer.step()
            for k, v in {**terms, "loss": loss}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * images.shape[0]
            count += images.shape[0]
        scheduler.step()
        if count == 0:
            raise ValueError("stage 1 (darkening): the training data gave no batch (fewer images than batch_size?)")
        history.append({k: v / count for k, v in sums.items()})
        if log is not None:
            log(f"stage 1 (darkening) epoch {epoch + 1}/{s.epochs}: " +
                "  ".join(f"{k} {v:.4f}" for k, v in history[-1].items()))
    net.eval()
    return {"epochs": history, "seconds": round(time.perf_counter() - start, 2), "settings": asdict(s)}


# ------------------------------------------------------------------------------------------- files
def save_darkening(net: DarkeningNet, path: str | os.PathLike, info: Mapping[str, Any] | None = None) -> Path:
    """Write the module to ``path`` as safetensors (atomically), with its architecture and ``info``."""
    path = Path(path)
    save_safetensors(dict(net.state_dict()), path, {_META_KEY: json.dumps({**net.arch(), **(info or {})})})
    return path


def read_darkening_meta(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and recorded architecture of a darkening checkpoint; an error naming the file
    when it is not one."""
    state, raw = read_safetensors(path)
    if _META_KEY not in raw:
        raise CheckpointError(f"{path}: not a darkening module (no {_META_KEY!r} metadata); stage 1 writes one as "
                              "darkening.safetensors in the work dir")
    try:
        meta = json.loads(raw[_META_KEY])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: metadata {_META_KEY!r} is not JSON ({err})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: metadata {_META_KEY!r} is not a mapping")
    return state, meta


def load_darkening(path: str | os.PathLike, expect: Mapping[str, Any] | None = None,
                   device: str | torch.device = "cpu") -> DarkeningNet:
    """A :class:`DarkeningNet` from ``path``, refused (naming the file) when its architecture is not
    the one ``expect`` asks for (``width``, ``curve_rounds``, ``min_scale``) or its tensors do not fit."""
    state, meta = read_darkening_meta(path)
    if meta.get("arch") != DARKENING_ARCH:
        raise CheckpointError(f"{path}: darkening architecture {meta.get('arch')!r}, expected {DARKENING_ARCH!r}")
    args = {}
    for key in ("width", "curve_rounds", "min_scale"):
        if key not in meta:
            raise CheckpointError(f"{path}: darkening metadata lacks {key!r}")
        args[key] = meta[key]
        if expect is not None and key in expect and expect[key] != meta[key]:
            raise CheckpointError(f"{path}: a darkening module of another architecture ({key} {meta[key]!r}; the "
                                  f"config asks for {expect[key]!r})")
    try:
        net = DarkeningNet(**args)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: darkening metadata cannot build a module ({err})") from None
    check_tensors_fit(state, net.state_dict(), path, f"a darkening module of width {net.width}")
    net.load_state_dict(state)
    return net.to(device).eval().requires_grad_(False)
