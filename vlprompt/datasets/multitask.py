"""Several datasets joined into one label space (MVLPT's multitask source training), and a sampler
that balances the tasks in every batch.

:class:`MultitaskDataset` builds each task with :func:`~vlprompt.datasets.build_dataset` (its own
split, few-shot sampling, seed and class subset) and concatenates them, as the official MVLPT's
``MVLPTCOOPDataManager`` does:

* labels are offset in task order, so task ``t`` owns the labels ``task_ranges[t] = (start, end)``
  of the union (``num_classes`` in all);
* every item is the task's own item (``img``, ``label``, ...) with the union label and ``'task'``
  (the task's index; MVLPT keeps it in Dassl's ``domain`` field, which stays the reader's here);
* ``classnames`` is the union list in label order: the plain class names, the text the learner
  prompts with (as in the official code); ``class_keys`` are task-qualified unique keys
  (``"toy-shapes/red circle"``). Two tasks that share a class name keep two labels (one warning,
  :class:`ClassNameClashWarning`: their prompts are the same, so over the union their logits tie;
  evaluation restricted to a task's classes is unaffected).

In a config::

    train_dataloader = dict(
        sampler=dict(type=DefaultSampler, shuffle=True),   # official: concatenate and shuffle
        dataset=dict(type=MultitaskDataset, split="train", num_shots=16,   # defaults of every task
                     tasks=[dict(name="toy-shapes"), dict(name="toy-patterns", num_shots=4)]))

``data_root``, ``image_size`` and ``seed`` reach every task as they reach a single dataset from
:func:`~vlprompt.engine.build_runner` (each task may set its own); a few-shot task without a seed
uses the outer ``seed`` (the run's seed), else 1, like :class:`~vlprompt.datasets.BenchmarkDataset`.
``test = train.with_split("test")`` derives the test set with the same classes.

:class:`TaskBalancedSampler` (an mmengine sampler, ``sampler=dict(type=TaskBalancedSampler)``) is the
alternative to the official shuffled concatenation: every position of the epoch's index stream is
given to a task (``mode='round_robin'``: each consecutive run of ``T`` positions holds every task
once, in a fresh random order; ``mode='uniform'``: a task drawn uniformly at random per position),
and each task's positions walk through a reshuffled pass of its own samples (small tasks repeat,
big tasks are subsampled). A batch of ``B`` consecutive indices therefore holds ``floor(B/T)`` or
``ceil(B/T)`` samples of each task in round-robin mode.
"""

from __future__ import annotations

import bisect
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..errors import ConfigError
from ..registry import DATASETS, on_mmengine
from .builder import build_dataset, canonical_name, list_datasets
from .loading import DEFAULT_CACHE_BYTES

__all__ = ['ClassNameClashWarning', 'MultitaskDataset', 'TaskBalancedSampler']

_SPEC_ONLY = ('name', 'task_name')


class ClassNameClashWarning(UserWarning):
    """Two tasks of a :class:`MultitaskDataset` share a class name (kept as two labels)."""


def _norm(name: str) -> str:
    return ' '.join(str(name).casefold().split())


class MultitaskDataset(Dataset):
    """The union of several datasets: one label space, a task id per sample.

    Args:
        tasks: One entry per task, in label order: ``dict(name=<dataset>, **build_dataset args)``
            (``split``, ``num_shots``, ``seed``, ``subsample``, ``folder`` ...), or just the
            dataset name. ``task_name`` renames a task (default: the dataset's name); task names
            must be unique.
        data_root, image_size, seed, split, num_shots, subsample, **common: defaults of every task
            (a task's own value wins); ``None`` leaves the reader's default, except in ``common``
            (``transform=None`` asks for PIL images). ``seed`` is also the
            few-shot seed of tasks that give none (1 when it is ``None``).
        name: What results and logs call the whole set.

    Raises:
        ConfigError: ``tasks`` empty, a task that is not a dict or lacks ``name``, an unknown dataset
            name or a duplicated task name (the message names ``tasks[i]`` and the key).
        DatasetError: A task's data is missing or broken (raised by its reader).
    """

    def __init__(self, tasks: Sequence[Mapping[str, Any] | str], data_root: str | None = None,
                 image_size: int | None = None, seed: int | None = None, split: str | None = None,
                 num_shots: int | None = None, subsample: str | None = None, name: str = 'multitask',
                 **common: Any) -> None:
        if isinstance(tasks, (str, Mapping)) or not isinstance(tasks, Sequence) or not tasks:
            raise ConfigError(f'MultitaskDataset: tasks must be a non-empty list of dict(name=<dataset>, ...), '
                              f'got {tasks!r}')
        defaults = {k: v for k, v in dict(data_root=data_root, image_size=image_size, split=split,
                                          num_shots=num_shots, subsample=subsample).items() if v is not None}
        defaults.update(common)  # transform=None (PIL images) is a value, not "unset"
        specs = [self._spec(i, task, defaults, seed) for i, task in enumerate(tasks)]
        datasets, names = [], []
        for spec in specs:
            kwargs = {k: v for k, v in spec.items() if k not in _SPEC_ONLY}
            ds = build_dataset(spec['name'], **kwargs)
            datasets.append(ds)
            names.append(spec.get('task_name') or getattr(ds, 'name', '') or spec['name'])
        self.task_specs = specs
        self._setup(datasets, names, name)
        self._warn_clashes()

    # ------------------------------------------------------------------ construction

    @staticmethod
    def _spec(i: int, task: Mapping[str, Any] | str, defaults: Mapping[str, Any], seed: int | None) -> dict[str, Any]:
        """Task ``i``'s ``build_dataset`` arguments, checked, with the defaults filled in."""
        if isinstance(task, str):
            task = {'name': task}
        if not isinstance(task, Mapping):
            raise ConfigError(f'MultitaskDataset: tasks[{i}] must be a dict(name=<dataset>, ...), got {task!r}')
        spec = dict(task)
        if not spec.get('name') or not isinstance(spec['name'], str):
            raise ConfigError(f"MultitaskDataset: tasks[{i}] has no 'name' key (the dataset's registry name, one of "
                              f"{', '.join(list_datasets())}); got {dict(task)!r}")
        try:
            spec['name'] = canonical_name(spec['name'])
        except KeyError:
            raise ConfigError(f"MultitaskDataset: tasks[{i}].name: unknown dataset {spec['name']!r}; known: "
                              f"{', '.join(list_datasets())}") from None
        for key, value in defaults.items():
            spec.setdefault(key, value)
        if spec.get('num_shots') is not None and spec.get('seed') is None:
            spec['seed'] = seed if seed is not None else 1
        return spec

    @classmethod
    def from_datasets(cls, datasets: Sequence[Any], task_names: Sequence[str] | None = None,
                      name: str = 'multitask') -> MultitaskDataset:
        """Join datasets already built (each with ``classnames``, ``len`` and dict items)."""
        if not datasets:
            raise ConfigError('MultitaskDataset.from_datasets: no datasets')
        obj = cls.__new__(cls)
        obj.task_specs = []
        names = list(task_names) if task_names is not None else [getattr(d, 'name', f'task{i}')
                                                                 for i, d in enumerate(datasets)]
        obj._setup(list(datasets), names, name)
        obj._warn_clashes()
        return obj

    def _setup(self, datasets: list[Any], names: list[str], name: str) -> None:
        if len(names) != len(datasets):
            raise ConfigError(f'MultitaskDataset: {len(names)} task names for {len(datasets)} datasets')
        first: dict[str, int] = {}
        for i, task in enumerate(names):
            j = first.setdefault(task, i)
            if j != i:
                raise ConfigError(f'MultitaskDataset: tasks[{j}] and tasks[{i}] are both named {task!r}; give one '
                                  "of them a task_name='...'")
        self.datasets = datasets
        self.task_names: list[str] = list(names)
        self.name = name
        self.task_ranges: list[tuple[int, int]] = []
        self.sample_ranges: list[tuple[int, int]] = []
        self.classnames: list[str] = []
        self.class_keys: list[str] = []
        label, index = 0, 0
        for task, ds in zip(names, datasets, strict=True):
            names_t = list(ds.classnames)
            self.task_ranges.append((label, label + len(names_t)))
            self.sample_ranges.append((index, index + len(ds)))
            self.classnames += names_t
            self.class_keys += [f'{task}/{c}' for c in names_t]
            label += len(names_t)
            index += len(ds)
        self.num_classes = label
        self._starts = [start for start, _ in self.sample_ranges]

    def _warn_clashes(self) -> None:
        """One warning for class names shared by tasks (the first pair and name, and how many in all)."""
        seen: dict[str, int] = {}
        clashes: list[tuple[int, int, str]] = []
        for t, (start, end) in enumerate(self.task_ranges):
            here = {}
            for c in self.classnames[start:end]:
                here.setdefault(_norm(c), c)
            for key, c in here.items():
                other = seen.setdefault(key, t)
                if other != t:
                    clashes.append((other, t, c))
        if clashes:
            a, b, c = clashes[0]
            more = f' ({len(clashes)} shared names in all)' if len(clashes) > 1 else ''
            warnings.warn(f'MultitaskDataset: tasks {self.task_names[a]!r} (tasks[{a}]) and {self.task_names[b]!r} '
                          f'(tasks[{b}]) share the class name {c!r}{more}; they stay separate labels '
                          f'({self.task_names[a]}/{c} and {self.task_names[b]}/{c}), but their prompts are the '
                          'same, so over the union their logits tie (per-task evaluation is unaffected)',
                          ClassNameClashWarning, stacklevel=3)

    # ------------------------------------------------------------------ splits

    def with_split(self, split: str, transform: Callable[[Image.Image], Any] | str | None = 'auto',
                   cache_images: bool | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES,
                   cache_short_side: int | None = None, check_images: bool = False) -> MultitaskDataset:
        """The same tasks (classes, few-shot picks, subsets, label offsets) over another split."""
        parts = [ds.with_split(split, transform=transform, cache_images=cache_images, cache_bytes=cache_bytes,
                               cache_short_side=cache_short_side, check_images=check_images) for ds in self.datasets]
        other = type(self).__new__(type(self))
        other.task_specs = [{**s, 'split': split} for s in self.task_specs]
        other._setup(parts, self.task_names, self.name)
        return other

    @property
    def split(self) -> str:
        """The tasks' split (``'mixed'`` when they differ)."""
        splits = {getattr(ds, 'split', None) for ds in self.datasets}
        return str(splits.pop()) if len(splits) == 1 else 'mixed'

    # ------------------------------------------------------------------ torch Dataset

    def __len__(self) -> int:
        return self.sample_ranges[-1][1]

    def locate(self, index: int) -> tuple[int, int]:
        """``(task, index within the task)`` of a global sample index."""
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f'index {index} out of range for {n} samples')
        task = bisect.bisect_right(self._starts, index) - 1
        while self.sample_ranges[task][0] == self.sample_ranges[task][1]:  # skip empty tasks
            task += 1
        return task, index - self.sample_ranges[task][0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        task, local = self.locate(index)
        item = dict(self.datasets[task][local])
        item['label'] = int(item['label']) + self.task_ranges[task][0]
        item['task'] = task
        item['index'] = self.sample_ranges[task][0] + local
        return item

    def sample_tasks(self) -> list[int]:
        """The task of every sample, in index order."""
        return [t for t, (start, end) in enumerate(self.sample_ranges) for _ in range(end - start)]

    # ------------------------------------------------------------------ reporting

    @property
    def shots(self) -> dict[str, Any] | None:
        """Few-shot counts merged over the tasks (``None`` when no task samples shots).

        ``requested`` is the K every few-shot task asked for (``None`` when they differ), ``min`` /
        ``max`` run over all classes of those tasks, ``short`` maps the task-qualified key of every
        class below its task's K to its count, and ``per_task`` gives each task's
        ``requested`` / ``min`` / ``max`` (``None`` for a task that uses all its images).
        """
        per = {t: getattr(ds, 'shots', None) for t, ds in zip(self.task_names, self.datasets, strict=True)}
        used = {t: s for t, s in per.items() if s}
        if not used:
            return None
        asked = {s['requested'] for s in used.values()}
        short = {f'{t}/{c}': n for t, s in used.items() for c, n in (s.get('short') or {}).items()}
        return {'requested': asked.pop() if len(asked) == 1 else None,
                'min': min(s['min'] for s in used.values()), 'max': max(s['max'] for s in used.values()),
                'short': short,
                'per_task': {t: None if s is None else {k: s[k] for k in ('requested', 'min', 'max')}
                             for t, s in per.items()}}

    @property
    def metainfo(self) -> dict[str, Any]:
        """mmengine's ``dataset_meta``: the union classes, the tasks and their class ranges."""
        return {'classes': tuple(self.classnames), 'class_keys': tuple(self.class_keys), 'dataset': self.name,
                'split': self.split, 'task_names': tuple(self.task_names),
                'task_ranges': tuple(tuple(r) for r in self.task_ranges),
                'tasks': tuple(getattr(ds, 'metainfo', {}) for ds in self.datasets)}

    def __repr__(self) -> str:
        tasks = ', '.join(f'{t}[{s}:{e}]' for t, (s, e) in zip(self.task_names, self.task_ranges, strict=True))
        return (f'{type(self).__name__}(name={self.name!r}, split={self.split!r}, images={len(self)}, '
                f'classes={self.num_classes}, tasks=[{tasks}])')


# vlprompt's registry, like the readers; and mmengine's root, where build_runner resolves a config's
# dataset type given as a string (dict(type='multitask', ...)).
# (mmengine's DATASETS and DATA_SAMPLERS when vlprompt's registries join mmengine's: see the end)
DATASETS.register_module(name='multitask', module=MultitaskDataset, force=True)
DATASETS.register_module(name='MultitaskDataset', module=MultitaskDataset, force=True)


def get_dist_info() -> tuple[int, int]:
    """mmengine's ``(rank, world size)``, imported when first used (the datasets need no mmengine)."""
    from mmengine.dist import get_dist_info as mmengine_get_dist_info

    return mmengine_get_dist_info()


def sync_random_seed() -> int:
    """mmengine's seed shared by every process, imported when first used."""
    from mmengine.dist import sync_random_seed as mmengine_sync_random_seed

    return mmengine_sync_random_seed()


class TaskBalancedSampler(Sampler):
    """An mmengine sampler giving every task of a :class:`MultitaskDataset` the same share of each batch.

    The epoch is a stream of ``epoch_length`` indices (default ``len(dataset)``, the number of
    steps of the official shuffled concatenation). Every position is given to a task:

    * ``mode='round_robin'`` (default): positions come in cycles of ``T`` (the number of tasks),
      each cycle holding every task once in a random order, so any ``B`` consecutive positions hold
      ``floor(B/T)`` or ``ceil(B/T)`` samples of each task, and the epoch ``floor(N/T)`` or
      ``ceil(N/T)`` per task;
    * ``mode='uniform'``: the task of each position is drawn uniformly at random (balanced in
      expectation).

    A task's positions take its samples from reshuffled passes over them (no sample repeats
    before all of the task's samples were used). ``shuffle=False`` keeps the task order fixed
    (0, 1, ..., T-1) and the samples in index order. Everything is drawn from a generator seeded
    with ``seed + epoch``: the same on every rank, deterministic per seed and epoch, and changed by
    ``set_epoch`` (mmengine's ``DistSamplerSeedHook``), like ``DefaultSampler``.

    Distributed: the global stream is padded to a multiple of the world size (``round_up``) and
    rank ``r`` takes positions ``r, r + W, r + 2W, ...`` as ``DefaultSampler`` does; the global
    stream is balanced, each rank's share only approximately (exactly when ``W`` divides ``T``
    and cycles are not shuffled).

    Args:
        dataset: A dataset with ``sample_ranges`` (the ``[start, end)`` indices of every task), e.g.
            :class:`MultitaskDataset`; a dataset without them is one task.
        shuffle: Shuffle the tasks' samples and the task order of each cycle.
        seed: Random seed (``None``: one seed shared by all ranks, as ``DefaultSampler``).
        round_up: Pad the stream so every rank gets the same number of indices.
        mode: ``'round_robin'`` or ``'uniform'``.
        epoch_length: Indices per epoch over all ranks (default ``len(dataset)``).
    """

    MODES = ('round_robin', 'uniform')

    def __init__(self, dataset: Any, shuffle: bool = True, seed: int | None = None, round_up: bool = True,
                 mode: str = 'round_robin', epoch_length: int | None = None) -> None:
        if mode not in self.MODES:
            raise ConfigError(f"TaskBalancedSampler: mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.rank, self.world_size = get_dist_info()
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else seed
        self.epoch = 0
        self.round_up = round_up
        self.mode = mode
        ranges = list(getattr(dataset, 'sample_ranges', None) or [(0, len(dataset))])
        self.task_indices = [list(range(start, end)) for start, end in ranges if end > start]
        if not self.task_indices:
            raise ConfigError('TaskBalancedSampler: the dataset has no samples')
        self.epoch_length = len(dataset) if epoch_length is None else int(epoch_length)
        if self.epoch_length < 1:
            raise ConfigError(f'TaskBalancedSampler: epoch_length must be >= 1, got {epoch_length!r}')
        if round_up:
            self.num_samples = math.ceil(self.epoch_length / self.world_size)
            self.total_size = self.num_samples * self.world_size
        else:
            self.num_samples = math.ceil((self.epoch_length - self.rank) / self.world_size)
            self.total_size = self.epoch_length

    def task_slots(self, g: torch.Generator | None = None) -> list[int]:
        """The task (position in ``task_indices``) of each of the epoch's ``epoch_length`` positions."""
        n, t = self.epoch_length, len(self.task_indices)
        if self.mode == 'uniform':
            if g is None:
                raise ValueError("mode='uniform' draws tasks at random: it needs a generator")
            return torch.randint(t, (n,), generator=g).tolist()
        slots: list[int] = []
        for _ in range(math.ceil(n / t)):
            slots += torch.randperm(t, generator=g).tolist() if self.shuffle and g is not None else list(range(t))
        return slots[:n]

    def global_indices(self) -> list[int]:
        """The epoch's whole index stream (all ranks), before padding and striding."""
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        slots = self.task_slots(g if self.shuffle or self.mode == 'uniform' else None)
        need = [0] * len(self.task_indices)
        for s in slots:
            need[s] += 1
        streams = []
        for indices, k in zip(self.task_indices, need, strict=True):
            stream: list[int] = []
            while len(stream) < k:
                if self.shuffle:
                    stream += [indices[i] for i in torch.randperm(len(indices), generator=g).tolist()]
                else:
                    stream += indices
            streams.append(iter(stream[:k]))
        return [next(streams[s]) for s in slots]

    def __iter__(self) -> Iterator[int]:
        indices = self.global_indices()
        if self.round_up:
            indices = (indices * int(self.total_size / len(indices) + 1))[:self.total_size]
        return iter(indices[self.rank:self.total_size:self.world_size])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (a new draw per epoch, the same on every rank)."""
        self.epoch = epoch


def _register_in_mmengine() -> None:
    from mmengine.registry import DATA_SAMPLERS
    from mmengine.registry import DATASETS as MMENGINE_DATASETS

    MMENGINE_DATASETS.register_module(name='multitask', module=MultitaskDataset, force=True)
    MMENGINE_DATASETS.register_module(name='MultitaskDataset', module=MultitaskDataset, force=True)
    DATA_SAMPLERS.register_module(name='TaskBalancedSampler', module=TaskBalancedSampler, force=True)


on_mmengine(_register_in_mmengine)
