"""ELEVATER's image-classification tasks, read from the layout its toolkit downloads.

The ELEVATER toolkit (and MVLPT, which uses it for its ELEVATER tables) fetches each task through
the ``vision-datasets`` package's ``DatasetHub`` into ``<root>/<root_folder>/``, as listed in the
toolkit's ``vision_datasets.json``: per split an *index file* and the zip archives it points into,
plus, for the "iris" format, a *labelmap*. vlprompt reads that folder as is, with no dependency on
``vision-datasets`` (whose download side pulls in the Azure SDK); with the data root as the
toolkit's root, each task lives at ``<data root>/classification/<folder>/``.

Iris format (16 of the tasks; verified against ``vision_datasets`` 1.0.21,
``IrisManifestAdaptor``)::

    classification/cifar_10_20211007/
    ├── labels.txt          one class name per line, label = line number (from 0)
    ├── train.txt           "<image path> <label>" per line; the path may hold spaces (the label
    ├── test.txt             is after the last one) and names a zip member as train.zip@<member>
    ├── train.zip
    └── val.zip             (cifar-10's test index points into val.zip)

COCO format (kitti-distance, resisc45_clip, hateful-memes; ``MultiClassClassificationCocoManifestAdaptor``):
the index is a COCO json (``images`` with ``id``, ``file_name`` and an optional ``zip_file``,
``annotations`` with ``image_id`` / ``category_id``, ``categories`` with ``id`` / ``name``); labels
are the categories' positions in ``id`` order, one annotation per image.

Each task is registered as ``elevater-<task>`` (``elevater-cifar-10``, ``elevater-resisc45-clip``,
``elevater-fgvc-aircraft-2013b-variants102``; see :data:`ELEVATER_TASKS`), a reader class of its
own, so ``build_dataset``, :class:`~vlprompt.datasets.multitask.MultitaskDataset` and
``tools/prepare_data.py verify`` take it by name like any benchmark, with the class and image
counts of the toolkit's list checked. Few-shot sampling, base/novel subsets, the image cache and
the checks are :class:`~vlprompt.datasets.base.BenchmarkDataset`'s; a bad line of an index file or
labelmap (or a listed image missing from its archive) stops the build with the file and line.

Index paths stay inside the task folder: an image path (iris line, or COCO ``zip_file`` + ``file_name``)
that is absolute, that has a ``..`` part, or that names a zip archive other than the split's own (its
``vision_datasets.json`` entry: ``train.zip`` for cifar-10's train index) is a bad line, refused with the
index file and the line. The rule is lexical, on the path as written: symbolic links that the user made
inside the task folder (an image folder or an archive kept on another disk) are followed, since placing
them there is the user's own choice; only the index file cannot lead out. The member part after
``<archive>.zip@`` is a name inside the archive, never a file-system path. Members are bounded in size
before they are inflated (:data:`~vlprompt.datasets.loading.MAX_MEMBER_BYTES`).

Differences from the official pipeline, kept on purpose:

* few-shot picks follow CoOp's rule (per class, ``random.Random(seed).sample``) like every other
  dataset here; ``vision_datasets``' ``sample_few_shot_subset`` shuffles all images with
  ``random.Random(seed)`` and keeps the first K per class, and MVLPT then carves 20 % of the K-shot
  set out as validation (for K = 1 the train set doubles as val) — other picks, the same protocol;
* class names come from the labelmap (or the categories); MVLPT prompts with the names of CLIP's
  ``prompts.md`` (its ``class_map``), which ``class_names=`` (a list or a text file, one per line)
  can supply;
* ``voc-2007-classification`` is multi-label (MVLPT trains it with soft targets and scores 11-point
  mAP): not registered, the single-label protocol here cannot score it. Tasks MVLPT scores by
  mean-per-class accuracy (caltech-101, fgvc-aircraft, oxford-flower-102, oxford-iiit-pets) are
  scored by top-1 here (``ElevaterTask.metric`` records the official metric).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .base import BenchmarkDataset, register_dataset
from .items import DatasetError, Datum
from .loading import image_exists, split_zip_path

__all__ = ['ELEVATER_NAMES', 'ELEVATER_STORAGE', 'ELEVATER_TASKS', 'ElevaterDataset', 'ElevaterTask',
           'elevater_registry_name', 'register_elevater_task']

ELEVATER_STORAGE = 'https://cvinthewildeus.blob.core.windows.net/datasets'
"""Where the toolkit downloads from (MVLPT's ``trainers/vision_benchmark/evaluation/feature.py``)."""

_LINE_EXAMPLES = 5
_LABEL = re.compile(r'\d+')


@dataclass(frozen=True)
class ElevaterTask:
    """One task of the toolkit's ``vision_datasets.json``.

    ``splits`` maps ``train`` / ``val`` / ``test`` to ``(index file, archives, image count)``.
    """

    name: str
    root_folder: str
    num_classes: int
    splits: Mapping[str, tuple[str, tuple[str, ...], int]] = field(default_factory=dict)
    labelmap: str | None = 'labels.txt'
    format: str = 'iris'
    metric: str = 'accuracy'


def _iris(name: str, folder: str, n: int, splits: Mapping[str, tuple[str, tuple[str, ...], int]],
          labelmap: str = 'labels.txt', metric: str = 'accuracy') -> ElevaterTask:
    return ElevaterTask(name, f'classification/{folder}', n, splits, labelmap, 'iris', metric)


def _coco(name: str, folder: str, n: int, splits: Mapping[str, tuple[str, tuple[str, ...], int]]) -> ElevaterTask:
    return ElevaterTask(name, f'classification/{folder}', n, splits, None, 'coco')


# MVLPT @ 6fa518b, trainers/vision_benchmark/resources/datasets/vision_datasets.json (the ELEVATER
# toolkit's list) and prompts.py's class_map_metric; in MVLPT's 20-task order, voc-2007 left out.
ELEVATER_TASKS: dict[str, ElevaterTask] = {t.name: t for t in (
    _coco('hateful-memes', 'hateful_memes_20211014', 2, {
        'train': ('train_meta.json', ('img.zip',), 8500), 'test': ('test_meta.json', ('img.zip',), 500)}),
    _iris('cifar-10', 'cifar_10_20211007', 10, {
        'train': ('train.txt', ('train.zip',), 50000), 'test': ('test.txt', ('val.zip',), 10000)}),
    _iris('mnist', 'mnist_20211008', 10, {
        'train': ('train.txt', ('train.zip',), 60000), 'test': ('test.txt', ('val.zip',), 10000)}),
    _iris('oxford-flower-102', 'oxford_flower_102_20211007', 102, {
        'train': ('train.txt', ('train.zip',), 1020), 'val': ('val.txt', ('val.zip',), 1020),
        'test': ('test.txt', ('test.zip',), 6149)}, metric='mean-per-class'),
    _iris('oxford-iiit-pets', 'oxford_iiit_pets_20211007', 37, {
        'train': ('train.txt', ('train.zip',), 3680), 'test': ('test.txt', ('val.zip',), 3669)},
        metric='mean-per-class'),
    _coco('resisc45_clip', 'resisc45_clip_20210924', 45, {
        'train': ('train.json', ('images.zip',), 3150), 'val': ('val.json', ('images.zip',), 3150),
        'test': ('test.json', ('images.zip',), 25200)}),
    _iris('country211', 'country211_20210924', 211, {
        'train': ('train.txt', ('train.zip',), 31650), 'val': ('valid.txt', ('valid.zip',), 10550),
        'test': ('test.txt', ('test.zip',), 21100)}),
    _iris('food-101', 'food_101_20211007', 101, {
        'train': ('train.txt', ('train.zip',), 75750), 'test': ('test.txt', ('val.zip',), 25250)}),
    _iris('stanford-cars', 'stanford_cars_20211007', 196, {
        'train': ('train.txt', ('train.zip',), 8144), 'test': ('test.txt', ('val.zip',), 8041)}),
    _iris('caltech-101', 'caltech_101_20211007', 102, {
        'train': ('train.txt', ('train.zip',), 3060), 'test': ('test.txt', ('test.zip',), 6084)},
        metric='mean-per-class'),
    _iris('dtd', 'dtd_20211007', 47, {
        'train': ('train.txt', ('train.zip',), 1880), 'val': ('val.txt', ('val.zip',), 1880),
        'test': ('test.txt', ('test.zip',), 1880)}),
    _iris('cifar-100', 'cifar100_20200721', 100, {
        'train': ('train_images.txt', ('train_images.zip',), 50000),
        'test': ('test_images.txt', ('test_images.zip',), 10000)}),
    _iris('fgvc-aircraft-2013b-variants102', 'fgvc_aircraft_2013b_variants102_20211007', 100, {
        'train': ('train.txt', ('train.zip',), 3334), 'val': ('val.txt', ('val.zip',), 3333),
        'test': ('test.txt', ('test.zip',), 3333)}, metric='mean-per-class'),
    _iris('patch-camelyon', 'patch_camelyon_20211007', 2, {
        'train': ('train.txt', ('train.zip',), 262144), 'val': ('val.txt', ('validation.zip',), 32768),
        'test': ('test.txt', ('test.zip',), 32768)}),
    _iris('rendered-sst2', 'rendered_sst2_20210924', 2, {
        'train': ('train.txt', ('train.zip',), 6920), 'val': ('valid.txt', ('valid.zip',), 827),
        'test': ('test.txt', ('test.zip',), 1821)}),
    _iris('gtsrb', 'gtsrb_20210923', 43, {
        'train': ('train.txt', ('train.zip',), 26640), 'val': ('val.txt', ('val.zip',), 12569),
        'test': ('test.txt', ('final_test.zip',), 12630)}, labelmap='labelmap.txt'),
    _iris('eurosat_clip', 'eurosat_clip_20210930', 10, {
        'train': ('train.txt', ('2750.zip',), 5000), 'val': ('val.txt', ('2750.zip',), 5000),
        'test': ('test.txt', ('2750.zip',), 5000)}),
    _iris('fer-2013', 'fer_2013_20211008', 7, {
        'train': ('train.txt', ('train.zip',), 28709), 'val': ('val.txt', ('val.zip',), 3589),
        'test': ('test.txt', ('test.zip',), 3589)}),
    _coco('kitti-distance', 'kitti_distance_20210923', 4, {
        'train': ('train_meta.json', ('train_images.zip',), 6347),
        'val': ('validation_meta.json', ('validation_images.zip',), 423),
        'test': ('test_meta.json', ('test_images.zip',), 711)}),
)}


def _outside_problem(rel: str, archives: Sequence[str]) -> str | None:
    """Why the index path ``rel`` would read outside the task folder (see the module doc), else ``None``:
    absolute, a ``..`` part, or a zip archive not among ``archives`` (the split's own)."""
    at = re.search(r'\.zip@', rel, re.IGNORECASE)
    on_disk = rel if at is None else rel[:at.start() + 4]  # the member after '@' is a name inside the archive
    if os.path.isabs(on_disk) or on_disk.startswith('~'):
        return f'image path {rel!r} is absolute: index paths are relative to the task folder'
    if '..' in re.split(r'[/\\]', on_disk):
        return f"image path {rel!r} climbs out of the task folder with '..'"
    if at is not None and os.path.normpath(on_disk) not in archives:
        return (f"image path {rel!r} names archive {os.path.normpath(on_disk)!r}, not one of this split's archives "
                f"({', '.join(archives)})")
    return None


def elevater_registry_name(task: str) -> str:
    """``'elevater-<task>'`` in registry style (``resisc45_clip`` -> ``elevater-resisc45-clip``)."""
    return 'elevater-' + task.strip().lower().replace('_', '-')


class ElevaterDataset(BenchmarkDataset):
    """Base reader of one ELEVATER task (a subclass per task sets ``task``; see the module doc).

    Args:
        class_names: Class names to prompt with instead of the labelmap's (a list, or a text file
            with one name per line), e.g. CLIP's ``prompts.md`` names that MVLPT uses; their number
            must match the labelmap's.
        data_root, split, num_shots, seed, subsample, ...: as :class:`BenchmarkDataset`.
    """

    task: ClassVar[ElevaterTask]
    image_dir = ''

    def __init__(self, data_root: str | os.PathLike[str] | None = None,
                 class_names: Sequence[str] | str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        self._class_names = class_names
        super().__init__(data_root=data_root, **kwargs)

    def _open(self, data_root: str | os.PathLike[str] | None) -> None:
        super()._open(data_root)
        self._where: dict[str, str] = {}  # image path -> "index file line N", for error messages
        self._coco_cache: dict[str, tuple[list[tuple[str, int]], list[str]]] = {}

    # ------------------------------------------------------------------ files

    def index_path(self, split: str) -> Path:
        """The index file of ``split``."""
        return self.dataset_path / self.task.splits[split][0]

    @property
    def labelmap_path(self) -> Path | None:
        """The labelmap (iris format), else ``None``."""
        return None if self.task.labelmap is None else self.dataset_path / self.task.labelmap

    @property
    def source_path(self) -> Path:
        return self.labelmap_path or self.index_path('train')

    # ------------------------------------------------------------------ classes

    def read_classnames(self) -> list[str]:
        """The labelmap's names (the categories' for COCO indexes); ``class_names`` only changes
        :attr:`classnames`, the text prompted with, so few-shot picks are shared either way."""
        return self._read_labelmap() if self.task.format == 'iris' else self._coco_index('train')[1]

    @functools.cached_property
    def prompt_names(self) -> list[str] | None:
        """``class_names`` as given (checked: one per class, no name twice), else ``None``."""
        override = getattr(self, '_class_names', None)
        if override is None:
            return None
        where = override if isinstance(override, (str, os.PathLike)) else self.source_path
        if isinstance(override, (str, os.PathLike)):
            try:
                with open(override, encoding='utf-8') as f:
                    given = [line.strip() for line in f if line.strip()]
            except OSError as err:
                raise DatasetError(self.name, f'cannot read class_names ({err.__class__.__name__})', where) from err
        else:
            given = [str(n) for n in override]
        if len(given) != len(self.all_classnames):
            raise DatasetError(self.name, f'class_names has {len(given)} names, the dataset has '
                                          f'{len(self.all_classnames)} classes', where)
        problems = [p for p in self.classname_problems(given) if 'share the class name' in p.message]
        if problems:
            raise DatasetError(self.name, f'class_names: {problems[0].message}', where)
        return given

    @property
    def classnames(self) -> list[str]:
        """Names of the classes in use (``class_names`` when given, else the labelmap's), index = label."""
        names = self.prompt_names or self.all_classnames
        return [names[i] for i in self.selected_labels]

    def _read_labelmap(self) -> list[str]:
        path = self.labelmap_path
        assert path is not None
        try:
            with open(path, encoding='utf-8') as f:
                lines = [line.strip() for line in f]
        except FileNotFoundError:
            raise DatasetError(self.name, 'labelmap not found', path, self.howto()) from None
        except (OSError, UnicodeDecodeError) as err:
            raise DatasetError(self.name, f'cannot read the labelmap ({err.__class__.__name__}: {err})', path) from err
        while lines and not lines[-1]:
            lines.pop()
        blank = [i + 1 for i, line in enumerate(lines) if not line]
        if blank:
            raise DatasetError(self.name, f'labelmap line {blank[0]} is empty (label = line number, so a blank line '
                                          'would shift every later class)', path)
        if not lines:
            raise DatasetError(self.name, 'labelmap lists no classes', path)
        return lines

    # ------------------------------------------------------------------ splits

    def read_split(self, split: str) -> list[Datum]:
        if split not in self.task.splits:
            return []
        return self._read_coco(split) if self.task.format == 'coco' else self._read_iris(split)

    def _read_iris(self, split: str) -> list[Datum]:
        path = self.index_path(split)
        names = self.all_classnames
        root = str(self.dataset_path)
        archives = self.task.splits[split][1]
        items: list[Datum] = []
        problems: list[str] = []
        try:
            with open(path, encoding='utf-8') as f:
                lines = f.readlines()
        except FileNotFoundError:
            raise DatasetError(self.name, f'index file of split {split!r} not found', path, self.howto()) from None
        except (OSError, UnicodeDecodeError) as err:
            raise DatasetError(self.name, f'cannot read index file ({err.__class__.__name__}: {err})', path) from err
        for lineno, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line:
                continue
            parts = line.rsplit(' ', 1)  # as vision_datasets: only the image path may hold spaces
            problem = None
            if len(parts) != 2 or not parts[0].strip():
                problem = f'{line!r} is not "<image path> <label>"'
            elif ',' in parts[1]:
                problem = (f'{parts[1]!r} lists several labels: multi-label tasks are not supported (one label '
                           'per image)')
            elif not _LABEL.fullmatch(parts[1]):
                problem = f'label {parts[1]!r} is not a whole number'
            elif int(parts[1]) >= len(names):
                problem = (f'label {int(parts[1])} is out of range: the labelmap has {len(names)} classes '
                           f'(0..{len(names) - 1})')
            if problem is not None:
                problems.append(f'line {lineno}: {problem}')
                continue
            rel, label = parts[0].strip(), int(parts[1])
            outside = _outside_problem(rel, archives)
            if outside is not None:
                problems.append(f'line {lineno}: {outside}')
                continue
            impath = os.path.join(root, rel)
            self._where[impath] = f'{path.name} line {lineno}'
            items.append(Datum(impath, label, names[label]))
        if problems:
            more = f'; and {len(problems) - _LINE_EXAMPLES} more' if len(problems) > _LINE_EXAMPLES else ''
            raise DatasetError(self.name, f'{len(problems)} bad line(s) in index file {path.name}: '
                                          + '; '.join(problems[:_LINE_EXAMPLES]) + more, path)
        return items

    def _coco_index(self, split: str) -> tuple[list[tuple[str, int]], list[str]]:
        """``(image path, label)`` pairs and the category names of a COCO-format index (memoised)."""
        if split in self._coco_cache:
            return self._coco_cache[split]
        path = self.index_path(split)
        try:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
        except FileNotFoundError:
            raise DatasetError(self.name, f'index file of split {split!r} not found', path, self.howto()) from None
        except (OSError, ValueError) as err:
            raise DatasetError(self.name, f'cannot parse the COCO index ({err.__class__.__name__}: {err})',
                               path) from err
        problems: list[str] = []
        try:
            cats = sorted(data['categories'], key=lambda c: c['id'])
            names = [str(c['name']) for c in cats]
            position = {c['id']: i for i, c in enumerate(cats)}
            images = {img['id']: img for img in data['images']}
            labels: dict[Any, list[int]] = {i: [] for i in images}
            for k, ann in enumerate(data['annotations']):
                if ann['image_id'] not in images:
                    problems.append(f'annotation {k}: unknown image_id {ann["image_id"]!r}')
                elif ann['category_id'] not in position:
                    problems.append(f'annotation {k}: unknown category_id {ann["category_id"]!r}')
                else:
                    labels[ann['image_id']].append(position[ann['category_id']])
            pairs = []
            root = str(self.dataset_path)
            for image_id in sorted(images):  # vision_datasets orders images by id
                found = labels[image_id]
                if len(found) != 1:
                    problems.append(f'image id {image_id!r} has {len(found)} annotations (one label per image)')
                    continue
                img = images[image_id]
                rel = (f'{img["zip_file"]}@' if img.get('zip_file') else '') + str(img['file_name'])
                outside = _outside_problem(rel, self.task.splits[split][1])
                if outside is not None:
                    problems.append(f'image id {image_id!r}: {outside}')
                    continue
                impath = os.path.join(root, rel)
                self._where[impath] = f'{path.name} image id {image_id!r}'
                pairs.append((impath, found[0]))
        except (KeyError, TypeError, AttributeError) as err:
            raise DatasetError(self.name, f'not a COCO classification index ({err.__class__.__name__}: {err})',
                               path) from err
        if problems:
            more = f'; and {len(problems) - _LINE_EXAMPLES} more' if len(problems) > _LINE_EXAMPLES else ''
            raise DatasetError(self.name, f'{len(problems)} problem(s) in COCO index {path.name}: '
                                          + '; '.join(problems[:_LINE_EXAMPLES]) + more, path)
        self._coco_cache[split] = (pairs, names)
        return pairs, names

    def _read_coco(self, split: str) -> list[Datum]:
        pairs, names = self._coco_index(split)
        if split != 'train' and names != self._coco_index('train')[1]:
            raise DatasetError(self.name, f'the categories of {self.index_path(split).name} differ from those of '
                                          f'{self.index_path("train").name} (labels are positions in them)',
                               self.index_path(split))
        classnames = self.all_classnames
        return [Datum(impath, label, classnames[label]) for impath, label in pairs]

    # ------------------------------------------------------------------ checks

    def where(self, impath: str) -> str | None:
        """``'<index file> line N'`` (or ``'image id X'``) that lists ``impath``."""
        return self._where.get(impath)

    def _check_items(self, split: str, items: list[Datum]) -> None:
        if not items:
            raise DatasetError(self.name, f'split {split!r} has no images', self.index_path(split))
        present = {it.label for it in items}
        empty = [label for label in range(len(self.classnames)) if label not in present]
        if empty:
            more = f' ({len(empty)} empty classes in all)' if len(empty) > 1 else ''
            raise DatasetError(self.name, f'class {self.classnames[empty[0]]!r} has no images in split '
                                          f'{split!r}{more}', self.index_path(split))
        missing = [it.impath for it in items if not image_exists(it.impath)]
        if missing:
            first = missing[0]
            parts = split_zip_path(first)
            what = f'not in {os.path.basename(parts[0])}' if parts and os.path.isfile(parts[0]) else 'not found'
            where = self.where(first)
            listed = f' (listed at {where}, {what})' if where else ''
            raise DatasetError(self.name, f'{len(missing)} image(s) listed for split {split!r} are missing, first'
                                          f'{listed}', first, self.image_hint())

    def image_hint(self) -> str | None:
        return self.howto()


def register_elevater_task(task: ElevaterTask, name: str | None = None) -> type[ElevaterDataset]:
    """Register a reader for ``task`` (default name ``elevater-<task>``) and return its class; use it
    for any dataset in the toolkit's layout."""
    reg = name or elevater_registry_name(task.name)
    hint = (f'ELEVATER {task.name}: downloaded by the ELEVATER toolkit / vision-datasets DatasetHub into '
            f'<data root>/{task.root_folder}/ (from {ELEVATER_STORAGE}/{task.root_folder}/)')
    files: dict[str, str] = {}
    if task.labelmap:
        files[task.labelmap] = hint
    for index, archives, _ in task.splits.values():
        files[index] = hint
        for archive in archives:
            files[archive] = hint
    published = {'classes': task.num_classes, **{s: n for s, (_, _, n) in task.splits.items()}}
    cls_name = 'Elevater' + ''.join(p.capitalize() for p in re.split(r'[^0-9a-zA-Z]+', task.name) if p)
    attrs: dict[str, Any] = {
        'task': task, 'dataset_dir': task.root_folder, 'num_classes': task.num_classes,
        'has_val': 'val' in task.splits, 'files': files, 'published': published, '__module__': __name__,
        '__doc__': f'ELEVATER task {task.name!r} ({task.num_classes} classes, {task.format} format).'}
    cls = type(cls_name, (ElevaterDataset,), attrs)
    register_dataset(reg)(cls)
    return cls


ELEVATER_NAMES: tuple[str, ...] = tuple(elevater_registry_name(n) for n in ELEVATER_TASKS)
"""Registry names of the ELEVATER tasks, in MVLPT's order."""

for _task in ELEVATER_TASKS.values():
    register_elevater_task(_task)
