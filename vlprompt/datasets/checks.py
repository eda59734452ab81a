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

:class:`DatasetChecks` holds the checks every reader runs on itself when it is built (required
files, class list, empty classes, repeated or missing images, and the image decoding above).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from .items import DatasetError, Datum
from .loading import unreadable_images

__all__ = ['FULL_DECODE_MAX', 'DatasetChecks', 'check_images', 'check_loader_settings']

FULL_DECODE_MAX = 10_000
_MISSING_EXAMPLES = 3


class DatasetChecks:
    """The checks of :class:`~vlprompt.datasets.base.BenchmarkDataset` (a mixin: it reads the reader's
    ``name``, ``dataset_path``, ``files``, ``classnames``, ``source_path``... and raises :class:`DatasetError`)."""

    def check_required(self) -> None:
        """Raise :class:`DatasetError` when the dataset folder or a required file is absent."""
        if not self.dataset_path.is_dir():
            raise DatasetError(self.name, 'dataset folder not found', self.dataset_path, self.howto())
        missing = self.missing_files()
        if missing:
            path, hint = missing[0]
            extra = f' (and {len(missing) - 1} more required paths)' if len(missing) > 1 else ''
            raise DatasetError(self.name, 'required file or folder not found' + extra, path, hint)

    def image_hint(self) -> str | None:
        """Where the images come from (the hint of the first required folder)."""
        for rel, hint in self.files.items():
            if rel.endswith('/'):
                return hint
        return None

    def _check_items(self, split: str, items: list[Datum]) -> None:
        if not items:
            raise DatasetError(self.name, f'split {split!r} has no images', self.source_path)
        present = {it.label for it in items}
        empty = [label for label in range(len(self.classnames)) if label not in present]
        if empty:
            more = f' ({len(empty)} empty classes in all)' if len(empty) > 1 else ''
            raise DatasetError(self.name, f'class {self.classnames[empty[0]]!r} has no images in split '
                                          f'{split!r}{more}', self.source_path)
        missing = [it.impath for it in items if not os.path.isfile(it.impath)]
        if missing:
            raise DatasetError(self.name, f'{len(missing)} image(s) listed for split {split!r} are missing, '
                                          f'first', missing[0], self.image_hint())

    def check_images(self, items: Iterable[Datum], full: bool = True, split: str | None = None,
                     workers: int | None = None, progress: bool = True, total: int | None = None) -> None:
        """Decode every image of ``items`` (only parse headers unless ``full``); a :class:`DatasetError`
        naming the unreadable ones (the first as ``path``, a few more and the count in the message, out of
        ``total`` images, default as many as ``items``). ``workers`` and ``progress`` (with the
        dataset's own setting) override the dataset's."""
        paths = [it.impath for it in items]
        bad = unreadable_images(paths, full=full, workers=workers or self.workers, progress=progress and self.progress,
                                desc=f'{self.name} {split or self.split}: checking images')
        if bad:
            raise self.unreadable_error(bad, len(paths) if total is None else total, split or self.split)

    def unreadable_error(self, bad: Sequence[tuple[str, str]], total: int, split: str) -> DatasetError:
        """The error for ``bad`` = ``[(path, problem), ...]`` out of ``total`` images of ``split``."""
        path, problem = bad[0]
        text = f'cannot read image ({problem})'
        if len(bad) > 1:
            others = ', '.join(repr(p) for p, _ in bad[1:1 + _MISSING_EXAMPLES])
            rest = len(bad) - 1 - _MISSING_EXAMPLES
            text += (f'; {len(bad)} of {total} images of split {split!r} are unreadable, also {others}'
                     + (f' and {rest} more' if rest > 0 else '') + '; first')
        return DatasetError(self.name, text, path, self.image_hint())

    def classname_problems(self, names: Sequence[str]) -> list[DatasetError]:
        """What is wrong with a class list: a count other than ``num_classes``, and class names shared
        by two labels (compared case- and space-insensitively, as the prompts would read them)."""
        problems = []
        if self.num_classes is not None and len(names) != self.num_classes:
            problems.append(DatasetError(self.name, f'found {len(names)} classes, expected {self.num_classes}',
                                         self.source_path, self.howto()))
        first: dict[str, int] = {}
        shared: list[tuple[int, int]] = []
        for label, name in enumerate(names):
            key = ' '.join(str(name).casefold().split())
            if key in first:
                shared.append((first[key], label))
            else:
                first[key] = label
        if shared:
            a, b = shared[0]
            same = repr(names[a]) if names[a] == names[b] else f'{names[a]!r} / {names[b]!r}'
            more = f' (and {len(shared) - 1} more shared names)' if len(shared) > 1 else ''
            problems.append(DatasetError(self.name, f'labels {a} and {b} share the class name {same}{more}: '
                                                    'their prompts would be the same', self.classnames_source))
        return problems

    def _check_repeats(self, split: str, items: Sequence[Datum]) -> None:
        """An image listed twice in one split would be trained or scored twice: an error."""
        seen: dict[str, int] = {}
        for i, it in enumerate(items):
            key = os.path.normpath(it.impath)
            j = seen.setdefault(key, i)
            if j != i:
                raise DatasetError(self.name, f'split {split!r} of {self.source_path} lists the same image twice '
                                              f'(entries {j} and {i})', it.impath)



def check_images(dataset: Any, full_decode_max: int = FULL_DECODE_MAX, workers: int | None = None,
                 progress: bool = True, done: set[str] | None = None) -> None:
    """Open every image of ``dataset``'s selected split; a :class:`DatasetError` listing the bad ones.

    Splits of up to ``full_decode_max`` images are decoded fully, larger ones have their headers
    checked. Paths in ``done`` are skipped, and the paths checked are added to it (the val and test
    loaders often share a split). A dataset made of others (``datasets``: a ``MultitaskDataset``) is
    checked part by part; other datasets that are not a ``BenchmarkDataset`` are not checked.
    """
    if not isinstance(dataset, DatasetChecks):
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
