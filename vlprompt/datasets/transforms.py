"""The image pipelines behind the published numbers (Dassl after Oct 2021, CoOp#8).

Train: ``RandomResizedCrop(size, scale=(0.08, 1.0), bicubic)`` + ``RandomHorizontalFlip`` +
``ToTensor`` + ``Normalize``. Test: ``Resize(size)`` of the shorter side (bicubic) +
``CenterCrop(size)`` + ``ToTensor`` + ``Normalize``. ``size`` is the backbone's input resolution
(224 for ViT-B/16); mean and std are CLIP's.
"""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from ..errors import ConfigError

__all__ = ['CLIP_MEAN', 'CLIP_STD', 'build_test_transform', 'build_train_transform', 'build_transform',
           'check_crop_scale']

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


def build_train_transform(size: int = 224, scale: tuple[float, float] = (0.08, 1.0),
                          mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> T.Compose:
    """Random-resized crop (Dassl's default scale), horizontal flip, tensor, CLIP normalisation."""
    return T.Compose([
        T.RandomResizedCrop(size, scale=scale, interpolation=InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def build_test_transform(size: int = 224, mean: Sequence[float] = CLIP_MEAN,
                         std: Sequence[float] = CLIP_STD) -> T.Compose:
    """Shorter side to ``size`` (bicubic), centre crop, tensor, CLIP normalisation."""
    return T.Compose([
        T.Resize(size, interpolation=InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def build_transform(train: bool, size: int = 224, scale: tuple[float, float] = (0.08, 1.0)) -> T.Compose:
    """The train (crop area range ``scale``) or the test pipeline at ``size``."""
    return build_train_transform(size, scale) if train else build_test_transform(size)


def check_crop_scale(value: Sequence[float]) -> tuple[float, float]:
    """``(low, high)`` with ``0 < low <= high <= 1``: the area range of a random-resized crop; else a
    :class:`~vlprompt.errors.ConfigError` (a ``ValueError``) naming the value."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f'crop_scale must be two numbers (low, high), got {value!r}') from None
    if not 0 < low <= high <= 1:
        raise ConfigError(f'crop_scale must satisfy 0 < low <= high <= 1, got {value!r}')
    return low, high
