"""Checks run before training starts, for what would otherwise only fail at test time.

A run trains for hours and then tests; an unreadable test image or a test loader with
``batch_size=0`` would only show up then. :func:`vlprompt.engine.runner.build_runner` calls these
on the val / test datasets and loader settings before it returns the runner:

* :func:`check_images` opens every image of a dataset's split: a full decode when the split is
  small (at most ``full_decode_max`` images, the default covers every published test set except
  ImageNet's, SUN397's, Food-101's and ImageNet-Sketch/-R's), else a header parse and
  ``Image.verify`` (about a tenth of a millisecond per file). The toy world's 1,200-image test
  sets are decoded in well under a second.
* :func:`check_loader_settings` refuses loader values the ``DataLoader`` would reject only when
  it is first iterated.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .base import BenchmarkDataset

__all__ = ['FULL_DECODE_MAX', 'check_images', 'check_loader_settings']

FULL_DECODE_MAX = 10_000


def check_images(dataset: Any, full_decode_max: int = FULL_DECODE_MAX, workers: int | None = None,
                 progress: bool = True, done: set[str] | None = None) -> None:
    """Open every image of ``dataset``'s selected split; a :class:`DatasetError` listing the bad ones.

    Splits of up to ``full_decode_max`` images are decoded fully, larger ones have their headers
    checked. Paths in ``done`` are skipped, and the paths checked are added to it (the val and test
    loaders often share a split). A dataset made of others (``datasets``: a ``MultitaskDataset``) is
    checked part by part; other datasets that are not :class:`BenchmarkDataset` are not checked.
    """
    if not isinstance(dataset, BenchmarkDataset):
        for part in getattr(dataset, 'datasets', None) or ():  # a MultitaskDataset: each task's split
            check_images(part, full_decode_max, workers, progress, done)
        return
    items = dataset.items
    todo = [it for it in items if done is None or it.impath not in done]
    if not todo:
        return
    dataset.check_images(todo, full=len(items) <= full_decode_max, workers=workers, progress=progress,
                         total=len(items))
    if done is not None:
        done.update(it.impath for it in todo)


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_loader_settings(key: str, loader: Mapping[str, Any]) -> None:
    """A :class:`~vlprompt.errors.ConfigError` (a ``ValueError``) naming ``<key>.<setting>`` for loader
    settings that cannot work.

    ``batch_size`` must be a whole number >= 1, ``num_workers`` >= 0, and ``persistent_workers``
    / ``prefetch_factor`` need ``num_workers > 0`` (torch only says so when the loader is first
    iterated, which for the test loader is after training).
    """
    batch_size = loader.get('batch_size', 1)
    if not _whole(batch_size) or batch_size < 1:
        raise ConfigError(f'{key}.batch_size must be a whole number >= 1, got {batch_size!r}')
    workers = loader.get('num_workers', 0)
    if not _whole(workers) or workers < 0:
        raise ConfigError(f'{key}.num_workers must be a whole number >= 0, got {workers!r}')
    if workers == 0 and loader.get('persistent_workers'):
        raise ConfigError(f'{key}.persistent_workers=True needs {key}.num_workers > 0 (got num_workers=0)')
    prefetch = loader.get('prefetch_factor')
    if prefetch is not None:
        if workers == 0:
            raise ConfigError(f'{key}.prefetch_factor={prefetch!r} needs {key}.num_workers > 0 (got num_workers=0)')
        if not _whole(prefetch) or prefetch < 1:
            raise ConfigError(f'{key}.prefetch_factor must be a whole number >= 1, got {prefetch!r}')
