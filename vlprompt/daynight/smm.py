"""Stage 2 of Similarity Min-Max on CLIP: night views, the BYOL-style similarity term, the day/night
feature gap and the darkening picture.

With the darkening module D frozen, every day image I of a training batch gets a night view
``D(I, E')``: E' ~ U(0, 0.2) per image plus pixel-wise and patch-wise Gaussian noise (sigma 0.025,
the patch noise drawn at 1/16 of the resolution and upsampled bilinearly); both views then get
their own colour jitter (brightness, contrast, saturation +-0.3, hue +-0.3, one draw per batch as
the official loop; ``night_view.hue=0`` where colour names the class, as in the toy world) and
CLIP's normalisation. The prompt learner is trained with the cross-entropy of both views plus
``0.1 * 1/2 [BYOL(day -> night) + BYOL(night -> day)]``, where
``BYOL(a -> b) = 2 - 2 cos(predictor(projector(f(a))), target_projector(f_target(b)))`` with a
stop-gradient on the target, whose learner parameters and projector follow the online ones by an
exponential moving average (momentum 0.99). Projector: Linear-BN-ReLU-Linear to 128; predictor:
the same at 128. The heads are discarded after training.

``f`` is the learner's image embedding when the learner prompts the image tower (VPT, MaPLe,
PromptSRC...). A learner that only prompts the text tower (CoOp, the default) cannot move the
image embedding at all, so the term would train nothing but its own heads; for those, ``f`` is
the vector of cosine scores of the image against the learner's class features, the image
representation the learner does shape (``representation="auto"``; ``"image"`` or ``"scores"``
choose one).

Deviation from the official ResNet recipe, on purpose: the official loop draws two crops of each
image for the two views; here the night view is the darkened copy of the day view's crop (the
data pipeline gives one crop per image).
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image, ImageDraw
from torch import nn
from torch.func import functional_call

from ..learners import PromptLearner
from .darkening import DarkeningNet, check_exposure_range

__all__ = [
    "NightViewSettings", "ProjectionHead", "REPRESENTATIONS", "SimilarityMax", "byol_pair_loss", "colour_jitter",
    "darkening_grid", "learner_prompts_images", "mean_pair_cosine", "mmd_rbf", "night_exposure", "night_view",
    "save_png",
]

REPRESENTATIONS = ("auto", "image", "scores")


@dataclass
class NightViewSettings:
    """How stage 2 makes a night view (the official ``classification/train.py`` defaults)."""

    exposure_range: tuple[float, float] = (0.0, 0.2)
    noise: float = 0.025
    noise_mode: str = "pixel_patch"  # any of "pixel", "patch", both, or "none"
    patch: int = 16  # the patch noise is drawn at 1/patch of the resolution
    jitter: float = 0.3  # brightness, contrast, saturation factors in [1 - jitter, 1 + jitter]
    hue: float = 0.3  # hue shift in [-hue, hue] (0 where colour names the class, as in the toy world)

    def __post_init__(self) -> None:
        self.exposure_range = check_exposure_range(self.exposure_range, "night_view.exposure_range")
        if self.noise < 0 or self.jitter < 0 or not 0 <= self.hue <= 0.5 or self.patch < 1:
            raise ValueError(f"night_view: noise {self.noise} and jitter {self.jitter} must be >= 0, hue {self.hue} in "
                             f"[0, 0.5], patch {self.patch} >= 1")


def night_exposure(batch: int, height: int, width: int, settings: NightViewSettings,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """The exposure map ``(B, 1, H, W)``: one uniform draw per image, plus the configured noise."""
    low, high = settings.exposure_range
    exposure = (torch.rand(batch, device=device) * (high - low) + low).view(-1, 1, 1, 1).expand(batch, 1, height, width)
    if "patch" in settings.noise_mode:
        small = torch.randn(batch, 1, max(1, height // settings.patch), max(1, width // settings.patch), device=device)
        exposure = exposure + F.interpolate(small * settings.noise, size=(height, width), mode="bilinear",
                                            align_corners=False)
    if "pixel" in settings.noise_mode:
        exposure = exposure + torch.randn(batch, 1, height, width, device=device) * settings.noise
    return exposure


def colour_jitter(images: torch.Tensor, strength: float = 0.3, hue: float = 0.3, rng: random.Random | None = None
                  ) -> torch.Tensor:
    """Brightness, contrast, saturation by factors in ``[1 - strength, 1 + strength]`` and hue by
    ``[-hue, hue]``, one draw for the whole batch, in that order (the official loop's 0.3 for all four)."""
    rng = rng or random
    if strength > 0:
        images = TF.adjust_brightness(images, rng.uniform(1 - strength, 1 + strength))
        images = TF.adjust_contrast(images, rng.uniform(1 - strength, 1 + strength))
        images = TF.adjust_saturation(images, rng.uniform(1 - strength, 1 + strength))
    if hue > 0:
        images = TF.adjust_hue(images, rng.uniform(-min(hue, 0.5), min(hue, 0.5)))
    return images


@torch.no_grad()
def night_view(darkening: DarkeningNet, pixels: torch.Tensor, settings: NightViewSettings) -> torch.Tensor:
    """``D(I, E')`` of [0, 1] pixels with a noisy stage-2 exposure map (before jitter)."""
    b, _, h, w = pixels.shape
    exposure = night_exposure(b, h, w, settings, pixels.device)
    darkened, _, _ = darkening(pixels, exposure.to(pixels.dtype))
    return darkened


class ProjectionHead(nn.Module):
    """Linear - BatchNorm - ReLU - Linear (BYOL's projector and predictor)."""

    def __init__(self, in_dim: int, out_dim: int = 128, kaiming: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.bn1 = nn.BatchNorm1d(out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)
        if kaiming:  # the official projector; its predictor keeps PyTorch's default init
            nn.init.kaiming_normal_(self.fc1.weight)
            nn.init.kaiming_normal_(self.fc2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.bn1(self.fc1(x))))


def learner_prompts_images(learner: PromptLearner) -> bool:
    """Whether learned parameters can change the learner's image embedding (it overrides
    :meth:`PromptLearner.encode_images`)."""
    return type(learner).encode_images is not PromptLearner.encode_images


def _scores(image_features: torch.Tensor, class_features: torch.Tensor) -> torch.Tensor:
    if class_features.dim() == 3:
        return torch.einsum("be,bce->bc", image_features, class_features)
    return image_features @ class_features.t()


class _Representation(nn.Module):
    """The representation the similarity term compares, as a module so that it can run with the
    EMA target's parameters in place of the learner's (``torch.func.functional_call``)."""

    def __init__(self, learner: PromptLearner, kind: str) -> None:
        super().__init__()
        self.learner, self.kind = learner, kind

    def forward(self, images: torch.Tensor | None, features: torch.Tensor | None = None) -> torch.Tensor:
        if features is None:
            features = self.learner.encode_images(images)
        if self.kind == "image":
            return features
        return _scores(features, self.learner.encode_classes(features).to(features.dtype))


class SimilarityMax(nn.Module):
    """SMM's model-level similarity maximisation for a prompt learner (BYOL-style, symmetric).

    Args:
        learner: the prompt learner being trained (not registered here: it stays the owner's).
        num_classes: classes of the training task (the width of the ``"scores"`` representation).
        representation: ``"auto"``, ``"image"`` or ``"scores"`` (see the module docstring).
        dim: width of the projector and predictor (128).
        momentum: EMA momentum of the target (0.99).
        weight: weight of the term (0.1).
    """

    def __init__(self, learner: PromptLearner, num_classes: int, representation: str = "auto", dim: int = 128,
                 momentum: float = 0.99, weight: float = 0.1) -> None:
        super().__init__()
        if representation not in REPRESENTATIONS:
            raise ValueError(f"similarity.representation must be one of {REPRESENTATIONS}, got {representation!r}")
        if not 0.0 <= momentum <= 1.0 or weight < 0 or dim < 1:
            raise ValueError(f"similarity: momentum {momentum} must be in [0, 1], weight {weight} >= 0, dim {dim} >= 1")
        if representation == "auto":
            representation = "image" if learner_prompts_images(learner) else "scores"
        self.representation, self.momentum, self.weight = representation, float(momentum), float(weight)
        in_dim = learner.backbone.embed_dim if representation == "image" else int(num_classes)
        self.projector = ProjectionHead(in_dim, dim)
        self.predictor = ProjectionHead(dim, dim, kaiming=False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        object.__setattr__(self, "_rep", _Representation(learner, representation))  # not a submodule
        self._names = list(learner.learned_state_dict())
        for name, value in learner.learned_state_dict().items():
            self.register_buffer(self._ema_key(name), value.detach().clone())

    @staticmethod
    def _ema_key(name: str) -> str:
        return "target_" + name.replace(".", "__")

    @property
    def learner(self) -> PromptLearner:
        return self._rep.learner

    def target_state(self) -> dict[str, torch.Tensor]:
        """The EMA target's learner parameters, keyed as the learner's."""
        return {name: getattr(self, self._ema_key(name)) for name in self._names}

    def representation_of(self, image_features: torch.Tensor, class_features: torch.Tensor) -> torch.Tensor:
        """The online representation from features the caller has already computed."""
        return image_features if self.representation == "image" else _scores(image_features, class_features)

    @torch.no_grad()
    def target_representation(self, images: torch.Tensor, image_features: torch.Tensor | None = None
                              ) -> torch.Tensor:
        """The EMA learner's representation of ``images`` (stop-gradient). ``image_features``, the
        online image features of the same images, are reused when no learned parameter acts on the
        image tower (they are then the target's too) and only the class side is recomputed."""
        params = {f"learner.{k}": v for k, v in self.target_state().items()}
        if learner_prompts_images(self.learner):
            image_features = None
        features = None if image_features is None else image_features.detach()
        return functional_call(self._rep, params, (images, features), strict=False)

    def target(self, rep: torch.Tensor) -> torch.Tensor:
        """Normalised EMA projection of a target representation."""
        with torch.no_grad():
            return F.normalize(self.target_projector(rep.float()), dim=1)

    def online(self, rep: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.predictor(self.projector(rep.float())), dim=1)

    def loss(self, day_images: torch.Tensor, night_images: torch.Tensor, day_rep: torch.Tensor,
             night_rep: torch.Tensor, image_features: torch.Tensor | None = None) -> torch.Tensor:
        """``weight * 1/2 [(2 - 2 cos(q_day, k_night)) + (2 - 2 cos(q_night, k_day))]``, then the EMA step
        (with the parameters of this step, before the optimizer moves them, as the official loop).

        ``image_features``: the online image features of ``cat([day_images, night_images])``, if the
        caller has them. Each view goes through the projectors on its own (batch statistics per view).
        """
        b = day_images.shape[0]
        rep = self.target_representation(torch.cat([day_images, night_images]), image_features)
        k_day, k_night = self.target(rep[:b]), self.target(rep[b:])
        q_day, q_night = self.online(day_rep), self.online(night_rep)
        loss = byol_pair_loss(q_day, k_night, q_night, k_day, self.weight)
        self.update_target()
        return loss

    @torch.no_grad()
    def update_target(self) -> None:
        """``target = m * target + (1 - m) * online`` for the learner's parameters and the projector."""
        m = self.momentum
        online = dict(self.learner.named_parameters())
        for name in self._names:
            buf = getattr(self, self._ema_key(name))
            buf.mul_(m).add_(online[name].detach().to(buf.dtype), alpha=1 - m)
        for t, o in zip(self.target_projector.parameters(), self.projector.parameters(), strict=True):
            t.mul_(m).add_(o.detach(), alpha=1 - m)


def byol_pair_loss(q_day: torch.Tensor, k_night: torch.Tensor, q_night: torch.Tensor, k_day: torch.Tensor,
                   weight: float) -> torch.Tensor:
    """The symmetric BYOL term of normalised online predictions ``q`` and targets ``k``."""
    one = 2 - 2 * (q_day * k_night).sum(dim=1).mean()
    two = 2 - 2 * (q_night * k_day).sum(dim=1).mean()
    return (one + two) * (0.5 * weight)


# ----------------------------------------------------------------------------------------- metrics
def mean_pair_cosine(day: torch.Tensor, night: torch.Tensor) -> float:
    """Mean cosine similarity between the features of the same scenes by day and by night."""
    return float((F.normalize(day.float(), dim=1) * F.normalize(night.float(), dim=1)).sum(dim=1).mean())


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, sigma: float = 1.0) -> float:
    """Squared maximum mean discrepancy (biased estimate, Gaussian kernel of width ``sigma``) between
    two sets of L2-normalised features."""
    x, y = F.normalize(x.double(), dim=1), F.normalize(y.double(), dim=1)

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-torch.cdist(a, b).pow(2) / (2 * sigma * sigma)).mean()

    return float(k(x, x) + k(y, y) - 2 * k(x, y))


# ----------------------------------------------------------------------------------------- picture
def darkening_grid(rows: Sequence[tuple[str, torch.Tensor]], cell: int | None = None, label_width: int = 150
                   ) -> Image.Image:
    """A grid image: one labelled row per ``(label, images)`` (``(N, 3, H, W)`` in [0, 1]), columns aligned."""
    n = max(len(images) for _, images in rows)
    size = rows[0][1].shape[-1]
    cell = cell or max(size, 96)
    pad = 4
    grid = Image.new("RGB", (label_width + n * (cell + pad) + pad, len(rows) * (cell + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, (label, images) in enumerate(rows):
        top = pad + r * (cell + pad)
        for line, text in enumerate(label.split("\n")):
            draw.text((pad, top + cell // 2 - 12 + 12 * line), text, fill=(0, 0, 0))
        for c, img in enumerate(images):
            arr = (img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype("uint8")
            tile = Image.fromarray(arr).resize((cell, cell), Image.NEAREST if cell % size == 0 else Image.BICUBIC)
            grid.paste(tile, (label_width + pad + c * (cell + pad), top))
    return grid


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG atomically and durably (:func:`vlprompt.io.atomic_write`)."""
    from ..io import atomic_write

    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"), suffix=".png")
