"""The shared dataset class: one reader per benchmark, one set of protocol rules for all.

A reader (a subclass of :class:`BenchmarkDataset`) only says where its files are and how to read
the full train / val / test lists (and, where the split files do not carry them, the class names).
Everything else lives here and is the same for every benchmark:

* the data root (argument, else ``$VLPROMPT_DATA``, else an error),
* few-shot sampling and its cache, the base/novel class split (:mod:`vlprompt.datasets.protocol`),
* the checks that run when a dataset is built, before any training step (:class:`~.checks.DatasetChecks`,
  a mixin of the class): required files present,
  class count as published, no class name shared by two labels, no empty class, no image listed
  twice in a split, every listed image of the selected split on disk (and, for a cached few-shot
  train split, decodable), ``num_shots`` None or >= 1 (a warning, and ``shots``, for classes
  with fewer images than asked),
* the torch side: ``len`` / indexing over the selected split with a transform, and the in-memory
  cache of decoded few-shot training images (:mod:`vlprompt.datasets.loading`).

An instance is a ``torch.utils.data.Dataset`` over one split (``split``), and also exposes the
protocol-applied ``train`` / ``val`` / ``test`` lists and ``classnames`` of the whole benchmark::

    ds = DTD(data_root='/data', split='train', num_shots=16, seed=1, subsample='base')
    ds.classnames          # the 24 base classes, index = label
    ds[0]                  # {'img': tensor, 'label': int, 'domain': int, 'impath': str, 'index': int}
    test = ds.with_split('test')   # same classes and picks, test images, test transform

Items of ``train`` / ``val`` / ``test`` are :class:`Datum` records with absolute image paths.
"""

from __future__ import annotations

import copy
import functools
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from PIL import Image
from torch.utils.data import Dataset

from ..registry import DATASETS
from .checks import DatasetChecks
from .items import DatasetError, Datum, FewShotWarning
from .loading import DEFAULT_CACHE_BYTES, ImageCache, load_image
from .protocol import (
    FewShotCache,
    check_num_shots,
    normalize_subsample,
    relabel,
    sample_few_shot_splits,
    select_classes,
)
from .transforms import build_transform, check_crop_scale

__all__ = ['DATA_ENV', 'BenchmarkDataset', 'register_dataset', 'resolve_data_root']

DATA_ENV = 'VLPROMPT_DATA'
SPLITS: tuple[str, ...] = ('train', 'val', 'test')


def resolve_data_root(data_root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``data_root`` if given, else ``$VLPROMPT_DATA``; an error when neither is set."""
    value = data_root if data_root not in (None, '') else os.environ.get(DATA_ENV)
    if not value:
        raise DatasetError('data', f'no data root: set ${DATA_ENV} to the folder that holds the datasets, or pass '
                                   '--cfg-options data_root=/path (tools/train.py, tools/test.py) or --data-root '
                                   '/path (the sweep tools, tools/zero_shot.py, tools/prepare_data.py); layouts: '
                                   'datasets/README.md')
    return Path(os.path.abspath(os.path.expanduser(os.fspath(value))))


B = TypeVar('B', bound='type[BenchmarkDataset]')


def register_dataset(name: str) -> Callable[[B], B]:
    """Class decorator: give a reader its registry ``name`` and add it to ``DATASETS``."""

    def deco(cls: B) -> B:
        cls.name = name
        DATASETS.register_module(name=name, module=cls)
        return cls

    return deco


class BenchmarkDataset(DatasetChecks, Dataset):
    """Base class of every reader; a torch dataset over one split of a benchmark.

    Args:
        data_root: Folder that holds the datasets (``$VLPROMPT_DATA`` when ``None``).
        split: ``'train'``, ``'val'``, ``'test'`` (or a reader's extra split, e.g. CODaN's
            ``'test_night'``). ``None``: ``'train'``, or ``'test'`` for test-only datasets.
        num_shots: K >= 1 images per class for train (and min(K, 4) for val); ``None`` uses all
            images (0 or a negative number is an error). Classes with fewer than K images keep
            all of theirs, with a :class:`FewShotWarning`; ``shots`` records the real counts.
        seed: Seed of the few-shot picks (the run's seed, as in CoOp).
        subsample: ``'all'``, ``'base'`` or ``'novel'`` (``'new'`` accepted).
        transform: ``'auto'`` (CLIP train pipeline for ``'train'``, test pipeline otherwise),
            a callable applied to the RGB PIL image, or ``None`` to return the PIL image.
        image_size: Input resolution of the backbone, used by ``'auto'``.
        crop_scale: The area range of the training pipeline's random-resized crop (``'auto'`` / ``'train'``):
            Dassl's ``(0.08, 1.0)`` by default; Tip-Adapter's cache uses ``(0.5, 1.0)``.
        cache_images: Keep decoded images in memory; ``None``: only for a few-shot train split.
        cache_bytes: Memory budget of that cache (default 2 GiB).
        cache_short_side: Shrink cached images to this shorter side (off by default).
        check_images: Decode every image of the selected split when building (slow on big splits).
        progress: Show a progress bar while decoding.
        workers: Threads used to decode images at build time.

    Raises:
        DatasetError: The dataset is missing, incomplete or inconsistent.
    """

    # What a reader declares.
    name: ClassVar[str] = ''
    dataset_dir: ClassVar[str] = ''       # folder under the data root
    image_dir: ClassVar[str] = ''         # image folder relative to dataset_dir ('' = dataset_dir)
    num_classes: ClassVar[int | None] = None
    has_val: ClassVar[bool] = True        # False: val is the test set (ImageNet), no few-shot val
    test_only: ClassVar[bool] = False
    extra_splits: ClassVar[tuple[str, ...]] = ()
    split_aliases: ClassVar[Mapping[str, str]] = {}
    aliases: ClassVar[tuple[str, ...]] = ()  # other names accepted by build_dataset (Dassl's, folder)
    picks_beside_data: ClassVar[bool] = True  # few-shot picks may be stored in the dataset's folder (else the cache)
    # The dataset's facts that runs are composed from (:func:`vlprompt.datasets.dataset_facts`).
    template: ClassVar[str] = 'a photo of a {}.'  # the hand-written zero-shot template (CoOp's CUSTOM_TEMPLATES)
    published: ClassVar[Mapping[str, int]] = {}  # class and split counts as published ('classes', 'train', ...)
    knowledge: ClassVar[Mapping[str, str] | None] = None  # class descriptions (KAPT): file relative to the root
    # Required files and folders (relative to dataset_dir; a trailing '/' marks a folder) mapped
    # to where they come from.
    files: ClassVar[Mapping[str, str]] = {}

    def __init__(self, data_root: str | os.PathLike[str] | None = None, split: str | None = None,
                 num_shots: int | None = None, seed: int | None = 1, subsample: str = 'all',
                 transform: Callable[[Image.Image], Any] | str | None = 'auto', image_size: int = 224,
                 crop_scale: Sequence[float] = (0.08, 1.0), cache_images: bool | None = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES,
                 cache_short_side: int | None = None, check_images: bool = False,
                 progress: bool = True, workers: int | None = None) -> None:
        self._open(data_root)
        self.check_required()
        self.num_shots = check_num_shots(num_shots, f'{self.name}: num_shots')
        if self.num_shots is not None and seed is None:
            raise ValueError('few-shot sampling needs a seed')
        self.seed = seed
        self.subsample = normalize_subsample(subsample)
        self.image_size = image_size
        self.crop_scale = check_crop_scale(crop_scale)
        self.progress = progress
        self.workers = workers
        self._select_split(split, transform, cache_images, cache_bytes, cache_short_side, check_images)

    # ------------------------------------------------------------------ setup

    @classmethod
    def inspect(cls, data_root: str | os.PathLike[str] | None = None) -> BenchmarkDataset:
        """A reader attached to its folder with no split selected and no check run (used by verify)."""
        obj = cls.__new__(cls)
        obj._open(data_root)
        return obj

    def _open(self, data_root: str | os.PathLike[str] | None) -> None:
        self.dataset_path = self.locate(data_root)
        self.data_root = self.dataset_path.parent
        self.image_root = self.dataset_path / self.image_dir if self.image_dir else self.dataset_path
        self.num_shots: int | None = None
        self.seed, self.subsample = 1, 'all'
        self.image_size, self.progress, self.workers, self.crop_scale = 224, True, None, (0.08, 1.0)
        self._full: dict[str, list[Datum]] = {}
        self._splits: dict[str, list[Datum]] = {}
        self._fewshot: tuple[list[Datum], list[Datum] | None] | None = None
        self._cache: ImageCache | None = None
        self.fewshot_file: Path | None = None

    def locate(self, data_root: str | os.PathLike[str] | None) -> Path:
        """The dataset's folder: ``<data root>/<dataset_dir>``."""
        return resolve_data_root(data_root) / self.dataset_dir

    def _select_split(self, split: str | None, transform: Callable[[Image.Image], Any] | str | None,
                      cache_images: bool | None, cache_bytes: int, cache_short_side: int | None,
                      check_images: bool) -> None:
        self.split = self.canonical_split(split)
        self.items = self.split_items(self.split)
        self._check_items(self.split, self.items)
        if transform in ('auto', 'train', 'test'):
            # 'test' on a training split gives deterministic inputs (exactness tests, feature caching)
            transform = build_transform(transform == 'train' or (transform == 'auto' and self.split == 'train'),
                                        self.image_size, self.crop_scale)
        elif isinstance(transform, str):
            raise ValueError(f"transform must be 'auto', 'train', 'test', a callable or None, got {transform!r}")
        self.transform = transform
        if cache_images is None:
            cache_images = self.split == 'train' and self.num_shots is not None
        self._cache = ImageCache(cache_bytes, cache_short_side) if cache_images and cache_bytes > 0 else None
        if self._cache is not None:
            self._cache.preload((it.impath for it in self.items), self._load, self.workers,
                                desc=f'{self.name} {self.split}: decoding', progress=self.progress)
        if check_images:
            self.check_images(self.items)
        if self.split == 'train':
            self._warn_short_classes()

    def with_split(self, split: str, transform: Callable[[Image.Image], Any] | str | None = 'auto',
                   cache_images: bool | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES,
                   cache_short_side: int | None = None, check_images: bool = False) -> BenchmarkDataset:
        """The same benchmark (classes, picks, subsample) over another split; reuses what was read."""
        other = copy.copy(self)
        other._select_split(split, transform, cache_images, cache_bytes, cache_short_side, check_images)
        return other

    # ------------------------------------------------------------------ reader hooks

    def read_split(self, split: str) -> list[Datum]:
        """All items of ``split`` as published (no few-shot, no subsample), in file order."""
        raise NotImplementedError

    def read_classnames(self) -> list[str]:
        """Class names, index = label, before any subsample."""
        raise NotImplementedError

    @property
    def source_path(self) -> Path:
        """The file or folder errors about classes point at."""
        return self.image_root

    @property
    def is_test_only(self) -> bool:
        """True for datasets that only have a test split (ImageNet variants, some toy domains)."""
        return self.test_only

    # ------------------------------------------------------------------ checks

    def missing_files(self) -> list[tuple[str, str]]:
        """Required files or folders that are absent (folders end with ``/``), with where to get each."""
        missing = []
        for rel, hint in self.files.items():
            path = self.dataset_path / rel
            if not (path.is_dir() if rel.endswith('/') else path.is_file()):
                missing.append((str(path) + ('/' if rel.endswith('/') else ''), hint))
        return missing

    def howto(self) -> str:
        """One line on how to get everything this dataset needs."""
        return '; '.join(dict.fromkeys(self.files.values())) or 'see datasets/README.md'

    def _load(self, path: str) -> Image.Image:
        try:
            return load_image(path)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise DatasetError(self.name, f'cannot read image ({err.__class__.__name__}: {err})',
                               path, self.image_hint()) from err

    # ------------------------------------------------------------------ classes

    @functools.cached_property
    def all_classnames(self) -> list[str]:
        """Class names of the full benchmark, index = original label; checked against ``num_classes``
        and for names shared by two labels (see :meth:`classname_problems`)."""
        names = self.read_classnames()
        problems = self.classname_problems(names)
        if problems:
            raise problems[0]
        return names

    @property
    def classnames_source(self) -> Path:
        """The file the class names are read from (errors about the class list point at it)."""
        return self.source_path

    @functools.cached_property
    def selected_labels(self) -> list[int]:
        """Original labels kept by ``subsample``; the new label of a class is its index here."""
        return select_classes(range(len(self.all_classnames)), self.subsample)

    @property
    def classnames(self) -> list[str]:
        """Names of the classes in use (after subsample), index = label."""
        return [self.all_classnames[i] for i in self.selected_labels]

    def classnames_from_items(self, splits: Mapping[str, list[Datum]], where: str | os.PathLike[str]) -> list[str]:
        """Class names from the items of all splits, checking one name per label, labels 0..n-1,
        and at least one training image per class (test images for test-only datasets)."""
        names: dict[int, str] = {}
        for items in splits.values():
            for it in items:
                known = names.setdefault(it.label, it.classname)
                if known != it.classname:
                    raise DatasetError(self.name, f'label {it.label} is named both {known!r} and '
                                                  f'{it.classname!r}', where)
        if not names:
            raise DatasetError(self.name, 'no classes found', where)
        n = max(names) + 1
        gaps = [label for label in range(n) if label not in names]
        if gaps or min(names) < 0:
            raise DatasetError(self.name, f'labels must be 0..n-1; label {gaps[0] if gaps else min(names)} '
                                          'has no images', where)
        source = 'test' if self.is_test_only else 'train'
        present = {it.label for it in splits.get(source, [])}
        empty = [label for label in range(n) if label not in present]
        if empty:
            more = f' ({len(empty)} empty classes in all)' if len(empty) > 1 else ''
            raise DatasetError(self.name, f'class {names[empty[0]]!r} has no {source} images{more}', where)
        return [names[label] for label in range(n)]

    # ------------------------------------------------------------------ splits and protocol

    def canonical_split(self, split: str | None) -> str:
        """Validate a split name (aliases resolved; ``None`` picks the default)."""
        if split is None:
            return 'test' if self.is_test_only else 'train'
        name = self.split_aliases.get(split, split)
        if name not in SPLITS + self.extra_splits:
            raise ValueError(f'{self.name} has no split {split!r}; '
                             f'choose from {", ".join(SPLITS + self.extra_splits)}')
        if self.is_test_only and name in ('train', 'val'):
            raise DatasetError(self.name, f"is a test-only dataset: it has no {name!r} split, use split='test'")
        return name

    def full_split(self, split: str) -> list[Datum]:
        """All items of ``split`` (memoised ``read_split``; empty train/val for test-only datasets)."""
        if split not in self._full:
            if self.is_test_only and split in ('train', 'val'):
                self._full[split] = []
            else:
                items = self.read_split(split)
                self._check_repeats(split, items)
                self._full[split] = items
        return self._full[split]

    def split_items(self, split: str) -> list[Datum]:
        """Items of ``split`` after the protocol: few-shot picks (train, val) then the class subset."""
        split = self.split_aliases.get(split, split)
        if split not in self._splits:
            if self.is_test_only and split in ('train', 'val'):
                items: list[Datum] = []
            elif split == 'train':
                items = self.few_shot_items()[0] if self.num_shots is not None else self.full_split('train')
            elif split == 'val' and not self.has_val:
                items = self.full_split('test')
            elif split == 'val' and self.num_shots is not None:
                items = self.few_shot_items()[1] or []
            elif split == 'val':
                items = self.full_split('val')
            else:
                items = self.full_split(split)
            self._splits[split] = relabel(items, self.selected_labels)
        return self._splits[split]

    @property
    def train(self) -> list[Datum]:
        """Training items after the protocol (few-shot picks, class subset, relabelled)."""
        return self.split_items('train')

    @property
    def val(self) -> list[Datum]:
        """Validation items after the protocol (the test set for datasets without val)."""
        return self.split_items('val')

    @property
    def test(self) -> list[Datum]:
        """Test items of the selected classes, relabelled."""
        return self.split_items('test')

    def few_shot_items(self) -> tuple[list[Datum], list[Datum] | None]:
        """Few-shot train and val picks over all classes, from the cache or sampled and cached."""
        if self._fewshot is None:
            k, seed = int(self.num_shots or 0), int(self.seed if self.seed is not None else 1)
            cache = FewShotCache(self.dataset_path, self.name, beside_data=self.picks_beside_data)
            hit = cache.load(k, seed)
            picks = None
            if hit is not None:
                data, path = hit
                picks = None if self.has_val and data.get('val') is None else (  # without val: sample again
                    cache.decode(data, path, self.all_classnames, self.image_root, self.has_val))
                self.fewshot_file = path
            if picks is None:
                val = self.full_split('val') if self.has_val else None
                picks = sample_few_shot_splits(self.full_split('train'), val, k, seed)
                self.fewshot_file = cache.save(k, seed, {
                    'dataset': self.name, 'num_shots': k, 'seed': seed,
                    'rule': 'per class in order of first appearance: random.Random(seed).sample; '
                            'train K, then val min(K, 4)',
                    'train': cache.encode(picks[0], self.image_root),
                    'val': None if picks[1] is None else cache.encode(picks[1], self.image_root),
                })
            self._fewshot = picks
        return self._fewshot

    # ------------------------------------------------------------------ torch Dataset

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        img = self.load_image(item.impath)
        if self.transform is not None:
            img = self.transform(img)
        return {'img': img, 'label': item.label, 'domain': item.domain, 'impath': item.impath, 'index': index}

    def load_image(self, path: str) -> Image.Image:
        """The decoded RGB image, from the in-memory cache when it is there."""
        if self._cache is None:
            return self._load(path)
        img = self._cache.get(path)
        if img is None:
            img = self._cache.put(path, self._load(path))
        # Cached images are shared: hand out a copy when no transform makes a new image.
        return img.copy() if self.transform is None and path in self._cache else img

    @property
    def shot_counts(self) -> dict[str, int] | None:
        """Training images per class in use (class name -> count, label order) when few-shot
        sampling is on, else ``None``; a class below ``num_shots`` shows its real count here."""
        if self.num_shots is None or self.is_test_only:
            return None
        counts = [0] * len(self.classnames)
        for it in self.train:
            counts[it.label] += 1
        return dict(zip(self.classnames, counts, strict=True))

    @property
    def shots(self) -> dict[str, Any] | None:
        """What few-shot sampling gave: ``requested`` K, the ``min`` / ``max`` per class, and ``short``
        (class -> real count for the classes below K). ``None`` without few-shot sampling. Recorded
        in ``results.json`` (``run.shots``) so a run is never reported as K-shot when it was not."""
        counts = self.shot_counts
        if counts is None or self.num_shots is None:
            return None
        values = list(counts.values())
        short = {name: n for name, n in counts.items() if n < self.num_shots}
        return {'requested': self.num_shots, 'min': min(values, default=0), 'max': max(values, default=0),
                'short': short}

    def _warn_short_classes(self) -> None:
        info = self.shots
        if not info or not info['short']:
            return
        short = info['short']
        listed = ', '.join(f'{name!r} {n}' for name, n in list(short.items())[:5])
        more = f' and {len(short) - 5} more' if len(short) > 5 else ''
        warnings.warn(f'[{self.name}] num_shots={self.num_shots}, but {len(short)} of {len(self.classnames)} '
                      f'classes have fewer training images ({listed}{more}); they are trained on all they have '
                      f'(shots per class: min {info["min"]}, max {info["max"]})', FewShotWarning, stacklevel=4)

    @property
    def image_cache(self) -> ImageCache | None:
        """The in-memory image cache of this split, if any."""
        return self._cache

    @property
    def metainfo(self) -> dict[str, Any]:
        """What evaluators and checkpoints need to know about the data (mmengine's ``dataset_meta``)."""
        return {'classes': tuple(self.classnames), 'dataset': self.name, 'split': self.split,
                'subsample': self.subsample, 'num_shots': self.num_shots, 'seed': self.seed,
                'fewshot_file': None if self.fewshot_file is None else str(self.fewshot_file)}

    def __repr__(self) -> str:
        split = getattr(self, 'split', None)
        n = len(self.items) if hasattr(self, 'items') else '?'
        return (f'{type(self).__name__}(name={self.name!r}, split={split!r}, images={n}, '
                f'classes={len(self.classnames) if split else "?"}, num_shots={self.num_shots}, '
                f'seed={self.seed}, subsample={self.subsample!r}, path={str(self.dataset_path)!r})')
