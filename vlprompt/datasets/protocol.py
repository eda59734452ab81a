"""The evaluation protocol of the published prompt-learning tables, as shared functions.

Nothing here knows about a particular dataset: the readers in :mod:`vlprompt.datasets` call these
functions on their item lists, so every benchmark follows the same rules.

Few-shot sampling (CoOp/Dassl rule)
    Dassl seeds Python's ``random`` with the run's seed before it builds the dataset, then, for the
    train list and afterwards the val list, groups the items by label in order of first appearance
    and calls ``random.sample(items, K)`` per class (all items when a class has fewer than K; no
    random call is made for such a class). Train gets K shots, val ``min(K, 4)``, from the same
    random stream, train first. :func:`sample_few_shot_splits` does exactly that with a private
    ``random.Random(seed)``: the same Mersenne Twister seeded the same way gives the same stream as
    the global one, and the caller's global random state is left alone.

Few-shot cache
    Picks are stored as JSON at ``<dataset dir>/split_fewshot/shot_{K}-seed_{S}.json`` (Dassl
    stores a pickle of the same picks next to it as ``.pkl``) and reused by every later run and
    method; the file is written atomically. When the dataset folder is read-only the cache goes to
    ``$VLPROMPT_CACHE`` (default ``~/.cache/vlprompt``) under ``split_fewshot/<dataset>-<hash>/``.

Base/novel split
    The sorted unique labels of the train set are cut at ``ceil(n / 2)``: base is the first part
    (it gets the extra class when n is odd), novel the rest; each part is relabelled 0..k-1 and is
    evaluated as its own k-way task. ``all`` keeps every class. Few-shot sampling happens on all
    classes first, so base-to-novel training uses the base part of the all-class picks.

Named protocols
    :data:`PROTOCOLS` holds the cross-dataset and domain-generalization settings (source dataset,
    targets, class subset per side); :func:`base_to_novel` and :func:`few_shot` build the
    per-dataset ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import random
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ..io import CACHE_ENV, atomic_write_json, cache_root
from .items import DatasetError, Datum

__all__ = [
    'BASE2NOVEL_DATASETS', 'CACHE_ENV', 'DataSpec', 'EvalProtocol', 'FewShotCache', 'PROTOCOLS',
    'SUBSAMPLES', 'XD_TARGETS', 'DG_TARGETS', 'IMAGENET_FAMILY', 'base_to_novel', 'cache_root', 'few_shot',
    'get_protocol', 'normalize_subsample', 'relabel', 'sample_few_shot', 'sample_few_shot_splits',
    'select_classes', 'subsample_classes', 'check_num_shots',
]

SUBSAMPLES: tuple[str, ...] = ('all', 'base', 'novel')
_SUBSAMPLE_ALIASES = {'new': 'novel'}


class _Labelled(Protocol):
    label: int


T = TypeVar('T', bound=_Labelled)


# --------------------------------------------------------------------------- few-shot sampling

def check_num_shots(num_shots: Any, where: str = 'num_shots') -> int | None:
    """``num_shots`` as given when it is ``None`` (all images) or a whole number >= 1, else a ValueError.

    0 and negative values used to mean "all images" silently; ``None`` is now the one way to say
    it, so a typo (``num_shots=0`` meant as 16, a negative sweep value) cannot train on everything.
    """
    if num_shots is None:
        return None
    if isinstance(num_shots, bool) or not isinstance(num_shots, numbers.Integral) or num_shots < 1:
        raise ValueError(f'{where} must be a whole number >= 1 (K images per class) or None (all images), '
                         f'got {num_shots!r}')
    return int(num_shots)


def sample_few_shot(items: Sequence[T], num_shots: int | None, rng: random.Random) -> list[T]:
    """Pick ``num_shots`` items per class with ``rng.sample``, classes in order of first appearance.

    A class with fewer than ``num_shots`` items keeps all of them and consumes no random numbers,
    as in Dassl's ``generate_fewshot_dataset`` (``repeat=False``). ``num_shots=None`` returns a
    copy of ``items``; 0 or a negative number is an error (see :func:`check_num_shots`).
    """
    if check_num_shots(num_shots) is None:
        return list(items)
    groups: dict[int, list[T]] = {}
    for item in items:
        groups.setdefault(item.label, []).append(item)
    picked: list[T] = []
    for group in groups.values():
        picked.extend(rng.sample(group, num_shots) if len(group) >= num_shots else group)
    return picked


def sample_few_shot_splits(train: Sequence[T], val: Sequence[T] | None, num_shots: int | None,
                           seed: int) -> tuple[list[T], list[T] | None]:
    """Few-shot train (K per class) and val (min(K, 4) per class) drawn from one stream seeded by ``seed``.

    Same picks as a CoOp/Dassl run with ``--seed seed`` on the same lists: the global ``random`` is
    seeded right before the dataset is built, then train is sampled, then val. ``val=None`` (a
    dataset without a val split, e.g. ImageNet) samples train only.
    """
    rng = random.Random(seed)
    train_fs = sample_few_shot(train, num_shots, rng)
    val_fs = None if val is None else sample_few_shot(val, None if num_shots is None else min(num_shots, 4), rng)
    return train_fs, val_fs


# --------------------------------------------------------------------------- few-shot cache

class FewShotCache:
    """Where the few-shot picks of one dataset folder are stored and found again.

    Args:
        dataset_dir: The dataset's folder; the primary location is its ``split_fewshot/``.
        key: A short name for the fallback folder (the registry name of the dataset).
        beside_data: ``False``: never in the dataset's folder, only in the cache (a user's own images).
    """

    def __init__(self, dataset_dir: str | Path, key: str, beside_data: bool = True) -> None:
        self.dataset_dir = Path(dataset_dir)
        self.key = key
        digest = hashlib.sha1(str(self.dataset_dir.absolute()).encode()).hexdigest()[:10]
        self.fallback_dir = cache_root() / 'split_fewshot' / f'{key}-{digest}'
        self.primary_dir = self.dataset_dir / 'split_fewshot' if beside_data else self.fallback_dir

    @staticmethod
    def encode(items: Sequence[Datum], image_root: str | os.PathLike[str]) -> list[list[Any]]:
        """Picks as stored: ``[path relative to image_root, label, class name(, domain)]`` rows."""
        root = str(image_root)
        out = []
        for it in items:
            row: list[Any] = [Path(os.path.relpath(it.impath, root)).as_posix(), it.label, it.classname]
            if it.domain:
                row.append(it.domain)
            out.append(row)
        return out

    def decode(self, data: Mapping[str, Any], path: Path, names: Sequence[str], image_root: str | os.PathLike[str],
               has_val: bool) -> tuple[list[Datum], list[Datum] | None]:
        """Stored picks back as train (and, with ``has_val``, val) items; a :class:`DatasetError` when a row
        does not match the dataset's class names ``names``."""

        def decode(rows: list[Any]) -> list[Datum]:
            items = []
            for row in rows:
                rel, label, classname = row[0], int(row[1]), row[2]
                if not 0 <= label < len(names) or names[label] != classname:
                    raise DatasetError(self.key, f'few-shot cache does not match the dataset (label {label} '
                                                 f'{classname!r}); delete the file to resample it', path)
                items.append(Datum(os.path.join(image_root, rel), label, classname,
                                   int(row[3]) if len(row) > 3 else 0))
            return items

        return decode(data['train']), (decode(data['val']) if has_val else None)

    @staticmethod
    def filename(num_shots: int, seed: int) -> str:
        """``shot_{K}-seed_{S}.json``, Dassl's name with a JSON suffix."""
        return f'shot_{num_shots}-seed_{seed}.json'

    def candidates(self, num_shots: int, seed: int) -> list[Path]:
        """Paths searched for cached picks, in order."""
        name = self.filename(num_shots, seed)
        return [self.primary_dir / name, self.fallback_dir / name]

    def load(self, num_shots: int, seed: int) -> tuple[dict[str, Any], Path] | None:
        """The stored picks and their path, or ``None`` when there are none.

        A file that cannot be parsed is ignored with a warning (the picks are then recomputed).
        """
        for path in self.candidates(num_shots, seed):
            if not path.is_file():
                continue
            try:
                with open(path, encoding='utf-8') as f:
                    data = json.load(f)
            except (OSError, ValueError) as err:
                warnings.warn(f'ignoring unreadable few-shot cache {path}: {err}', stacklevel=2)
                continue
            if isinstance(data, dict) and isinstance(data.get('train'), list):
                return data, path
            warnings.warn(f'ignoring malformed few-shot cache {path}', stacklevel=2)
        return None

    def save(self, num_shots: int, seed: int, data: dict[str, Any]) -> Path | None:
        """Store picks next to the data, else in the user cache; ``None`` when neither is writable."""
        for path in self.candidates(num_shots, seed):
            try:
                atomic_write_json(path, data)
                return path
            except OSError:
                continue
        warnings.warn(f'could not store few-shot picks in {self.primary_dir} nor {self.fallback_dir}; '
                      'they will be recomputed (same result) next time', stacklevel=2)
        return None


# --------------------------------------------------------------------------- base / novel

def normalize_subsample(subsample: str | None) -> str:
    """``'all'``, ``'base'`` or ``'novel'`` (``'new'``, CoOp's word, is accepted for ``'novel'``)."""
    value = (subsample or 'all').lower()
    value = _SUBSAMPLE_ALIASES.get(value, value)
    if value not in SUBSAMPLES:
        raise ValueError(f"subsample must be one of 'all', 'base', 'novel' (or 'new'), got {subsample!r}")
    return value


def select_classes(labels: Iterable[int], subsample: str) -> list[int]:
    """The labels kept by ``subsample``, in their new order (new label = position in the list).

    Sorted unique labels are cut at ``ceil(n / 2)``: base gets the first part, novel the rest.
    """
    subsample = normalize_subsample(subsample)
    ordered = sorted(set(labels))
    if subsample == 'all':
        return ordered
    m = math.ceil(len(ordered) / 2)
    return ordered[:m] if subsample == 'base' else ordered[m:]


def relabel(items: Iterable[T], selected: Sequence[int]) -> list[T]:
    """Keep the items whose label is in ``selected`` and give them label ``selected.index(label)``.

    Items must be dataclasses with a ``label`` field; they are copied, never modified.
    """
    mapping = {old: new for new, old in enumerate(selected)}
    if all(old == new for old, new in mapping.items()):
        return [item for item in items if item.label in mapping]
    return [dataclasses.replace(item, label=mapping[item.label])  # type: ignore[type-var]
            for item in items if item.label in mapping]


def subsample_classes(*splits: Sequence[T], subsample: str = 'all') -> list[list[T]]:
    """CoOp's base/novel rule on item lists: classes come from the first list (the train set).

    Returns one relabelled list per input list.
    """
    if not splits:
        return []
    selected = select_classes((item.label for item in splits[0]), subsample)
    return [relabel(split, selected) for split in splits]


# --------------------------------------------------------------------------- named protocols

BASE2NOVEL_DATASETS: tuple[str, ...] = (
    'imagenet', 'caltech101', 'oxford-pets', 'stanford-cars', 'oxford-flowers', 'food101',
    'fgvc-aircraft', 'sun397', 'dtd', 'eurosat', 'ucf101',
)
# Column order of the published cross-dataset table.
XD_TARGETS: tuple[str, ...] = BASE2NOVEL_DATASETS[1:]
DG_TARGETS: tuple[str, ...] = ('imagenet-v2', 'imagenet-sketch', 'imagenet-a', 'imagenet-r')
# ImageNet and its variants: the domain-generalization source and targets are one fact
IMAGENET_FAMILY: frozenset[str] = frozenset(('imagenet', *DG_TARGETS))


@dataclass(frozen=True)
class DataSpec:
    """One side of a protocol: a dataset, its class subset and the split read."""

    dataset: str
    subsample: str = 'all'
    split: str = 'test'


@dataclass(frozen=True)
class EvalProtocol:
    """Train on ``source`` (few-shot), then evaluate on each of ``targets``.

    ``average`` names the targets that enter the reported average (the source column is excluded
    from the cross-dataset and domain-generalization averages).
    """

    name: str
    source: DataSpec
    targets: tuple[DataSpec, ...]
    num_shots: int | None = 16  # None: every training image (no few-shot sampling)
    seeds: tuple[int, ...] = (1, 2, 3)
    average: tuple[str, ...] = ()
    description: str = ''


PROTOCOLS: dict[str, EvalProtocol] = {
    'cross-dataset': EvalProtocol(
        name='cross-dataset',
        source=DataSpec('imagenet', 'all', 'train'),
        targets=(DataSpec('imagenet'),) + tuple(DataSpec(d) for d in XD_TARGETS),
        average=XD_TARGETS,
        description='ImageNet, all 1000 classes, 16 shots; zero-shot transfer to 10 datasets '
                    '(all classes); the average is over the 10 targets.'),
    'domain-generalization': EvalProtocol(
        name='domain-generalization',
        source=DataSpec('imagenet', 'all', 'train'),
        targets=(DataSpec('imagenet'),) + tuple(DataSpec(d) for d in DG_TARGETS),
        average=DG_TARGETS,
        description='ImageNet, all 1000 classes, 16 shots; evaluated on ImageNet-V2/-Sketch/-A/-R '
                    '(A and R over their 200 classes); the average is over the 4 targets.'),
    'toy-domain-generalization': EvalProtocol(
        name='toy-domain-generalization',
        source=DataSpec('toy-shapes', 'all', 'train'),
        targets=(DataSpec('toy-shapes'), DataSpec('toy-shapes-sketch'), DataSpec('toy-shapes-night'),
                 DataSpec('toy-shapes-noise')),
        average=('toy-shapes-sketch', 'toy-shapes-night', 'toy-shapes-noise'),
        description='The toy analogue of ImageNet -> its variants: toy-shapes, all 40 classes, 16 shots; '
                    'evaluated on the same scenes drawn as sketches, at night and with noise.'),
    'day-night': EvalProtocol(
        name='day-night',
        source=DataSpec('codan', 'all', 'train'),
        targets=(DataSpec('codan', 'all', 'test'), DataSpec('codan', 'all', 'test_night')),
        num_shots=None,
        average=('codan',),
        description='CODaN: adapt with daytime training images only, report day and night test '
                    'accuracy (night is the headline number).'),
}


def base_to_novel(dataset: str, num_shots: int = 16, seeds: Sequence[int] = (1, 2, 3)) -> EvalProtocol:
    """Train on the base classes of ``dataset``, evaluate base and novel test sets as separate tasks."""
    return EvalProtocol(
        name=f'base2novel/{dataset}',
        source=DataSpec(dataset, 'base', 'train'),
        targets=(DataSpec(dataset, 'base'), DataSpec(dataset, 'novel')),
        num_shots=num_shots, seeds=tuple(seeds), average=(dataset,),
        description='HM = 2BN/(B+N) of the seed-averaged base and novel accuracies; the table '
                    'average takes the HM of the dataset-averaged B and N.')


def few_shot(dataset: str, num_shots: int, seeds: Sequence[int] = (1, 2, 3)) -> EvalProtocol:
    """CoOp's few-shot setting: K shots of every class, evaluated on the full test set."""
    return EvalProtocol(
        name=f'few-shot/{dataset}/{num_shots}', source=DataSpec(dataset, 'all', 'train'),
        targets=(DataSpec(dataset),), num_shots=num_shots, seeds=tuple(seeds), average=(dataset,))


def get_protocol(name: str, dataset: str | None = None, num_shots: int | None = None) -> EvalProtocol:
    """A protocol by name: ``'cross-dataset'``, ``'domain-generalization'``, ``'day-night'``,
    ``'base2novel'`` (needs ``dataset``) or ``'few-shot'`` (needs ``dataset`` and ``num_shots``)."""
    key = name.lower().replace('_', '-')
    if key in ('base2novel', 'base-to-novel', 'base2new'):
        if dataset is None:
            raise ValueError("the 'base2novel' protocol needs a dataset")
        return base_to_novel(dataset, 16 if num_shots is None else num_shots)
    if key == 'few-shot':
        if dataset is None or num_shots is None:
            raise ValueError("the 'few-shot' protocol needs a dataset and num_shots")
        return few_shot(dataset, num_shots)
    key = {'xd': 'cross-dataset', 'dg': 'domain-generalization'}.get(key, key)
    if key not in PROTOCOLS:
        raise ValueError(f'unknown protocol {name!r}; known: base2novel, few-shot, {", ".join(PROTOCOLS)}')
    proto = PROTOCOLS[key]
    return proto if num_shots is None else dataclasses.replace(proto, num_shots=num_shots)
