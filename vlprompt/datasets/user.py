"""Your own images as a dataset (``folder:PATH``, see :mod:`vlprompt.user_datasets` for the names).

Layouts read (``PATH``):

* a folder with one sub-folder per class (``PATH/<class>/*.jpg``, nested folders inside a class included), or
  with ``train/`` (and optionally ``val/``, ``test/``) above the class folders;
* a CSV list (``path,label[,split]`` rows; a header row is recognised by its ``path`` cell) or a JSONL list
  (``{"path": ..., "label": ..., "split": ...}`` per line); ``label`` is a class name or an index (indices need
  a names file); paths relative to the list's folder;
* a CoOp split file (``{"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}``), paths
  relative to its folder: the portable form, read as it is.

Class names come from the folder names or labels with ``_`` read as a space (as CoOp's readers do with folder
names), or from a names file (``names=``) that may map folder names or labels to readable names and sets the
label order; otherwise classes are sorted by name. Names that differ only in case, ``_`` or spaces are refused.

The split: the train/val/test folders or the list's ``split`` column when given (a missing val is carved from
train as Dassl's ``split_trainval`` does: 20 % of each class); otherwise each class's images are shuffled
with ``random.Random(split_seed)`` and cut as CoOp's ``read_and_split_data`` does (``round(n * train)``
train, ``round(n * val)`` val, the rest test; 0.5 / 0.2 by default). The first use writes that split as a
CoOp split file (``split_file=``, by default ``<cache>/user_datasets/<name>/split.json``), atomically and
never over a file with other content; later runs read it, so a run can be repeated and shared. Nothing is
ever written into ``PATH``: few-shot picks go to the cache too.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from ..io import atomic_write_text, cache_root
from ..user_datasets import user_dataset
from .base import register_dataset
from .items import DatasetError, Datum
from .loading import IMG_EXTENSIONS
from .splitfile import SPLIT_KEYS, SplitFileDataset

__all__ = ['DEFAULT_TRAIN', 'DEFAULT_VAL', 'UserDataset', 'UserDatasetWarning', 'carve_val', 'cut_split',
           'default_split_path', 'list_rows', 'read_names_file', 'read_user_layout', 'readable']

DEFAULT_TRAIN, DEFAULT_VAL = 0.5, 0.2
"""CoOp's ``read_and_split_data`` fractions (``p_trn=0.5, p_val=0.2``), used when no split is given."""
TRAINVAL_VAL = 0.2
"""Dassl's ``split_trainval`` fraction: val carved from train when only train and test are given."""
LIST_SUFFIXES = ('.csv', '.jsonl', '.json')
_EXAMPLES = 5


class UserDatasetWarning(UserWarning):
    """Something in a user's folder was passed over (files that are not images, images the split file lacks)."""


def _listed(things: Sequence[str]) -> str:
    more = f' and {len(things) - _EXAMPLES} more' if len(things) > _EXAMPLES else ''
    return ', '.join(things[:_EXAMPLES]) + more


def readable(key: str) -> str:
    """A folder name or label as a class name: ``_`` read as a space, spaces collapsed."""
    return ' '.join(key.replace('_', ' ').split())


# ------------------------------------------------------------------------------------------ class names
def read_names_file(path: str, dataset: str) -> tuple[list[str], dict[str, str]]:
    """A names file as (keys in label order, key -> readable name). ``.json``: an object ``{key: name}`` (its
    order is the label order) or a list of names (keys ``"0"``, ``"1"``...); text: ``key<TAB>name`` lines, or one
    name per line (key and name alike; the label order)."""
    try:
        text = Path(path).read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(dataset, f'cannot read the names file ({err})', path) from None
    if path.endswith('.json'):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as err:
            raise DatasetError(dataset, f'the names file is not JSON ({err})', path) from None
        if isinstance(data, list):
            data = {str(i): v for i, v in enumerate(data)}
        if not isinstance(data, dict) or not all(isinstance(v, str) and v.strip() for v in data.values()):
            raise DatasetError(dataset, 'the names file must hold {key: name} or [name, ...] with non-empty names',
                               path)
        return list(data), {str(k): ' '.join(v.split()) for k, v in data.items()}
    keys, names = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, tab, name = line.partition('\t')
        key, name = key.strip(), (name if tab else key).strip()
        if not key or not name:
            raise DatasetError(dataset, f'line {number} of the names file is not "key<TAB>name" nor a name', path)
        if key in names:
            raise DatasetError(dataset, f'line {number} of the names file repeats {key!r}', path)
        keys.append(key)
        names[key] = ' '.join(name.split())
    if not keys:
        raise DatasetError(dataset, 'the names file lists no classes', path)
    return keys, names


def _check_distinct(names: Mapping[str, str], dataset: str, where: str) -> None:
    """Two keys whose class names are one name once case, ``_`` and spaces aside (``Sea_Lion``, ``sea lion``)."""
    seen: dict[str, str] = {}
    for key, name in names.items():
        norm = ' '.join(name.replace('_', ' ').lower().split())
        if norm in seen:
            raise DatasetError(dataset, f'classes {seen[norm]!r} and {key!r} are one name once case and "_" '
                                        f'are set aside ({names[seen[norm]]!r}); rename one', where)
        seen[norm] = key


# ------------------------------------------------------------------------------------------ layouts
def _inside(path: str, root: str) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(root)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def _class_images(folder: str, root: str, dataset: str, skipped: list[str]) -> list[str]:
    """The image files below one class folder (sorted, relative to ``root``); other files are added to
    ``skipped``; a symbolic link that leads out of ``root`` is refused naming it."""
    found = []
    if not _inside(folder, root):
        raise DatasetError(dataset, 'a symbolic link leads out of the dataset folder', folder)
    for current, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        for d in dirs:
            if os.path.islink(os.path.join(current, d)) and not _inside(os.path.join(current, d), root):
                raise DatasetError(dataset, 'a symbolic link leads out of the dataset folder',
                                   os.path.join(current, d))
        for name in sorted(files):
            if name.startswith('.'):
                continue
            full = os.path.join(current, name)
            if os.path.islink(full) and not _inside(full, root):
                raise DatasetError(dataset, 'a symbolic link leads out of the dataset folder', full)
            if os.path.splitext(name)[1].lower() in IMG_EXTENSIONS:
                found.append(os.path.relpath(full, root))
            else:
                skipped.append(os.path.relpath(full, root))
    return found


def _class_folders(folder: str) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if not e.name.startswith('.') and e.is_dir())


def _read_folder(root: str, dataset: str) -> tuple[dict[str, list[tuple[str, str]]], list[str]]:
    """``{split or "": [(relpath, class key)]}`` of a folder layout, and the files passed over."""
    top = _class_folders(root)
    splits = [s for s in SPLIT_KEYS if s in top]
    skipped: list[str] = []
    if 'train' in splits or 'test' in splits:
        if 'train' not in splits:
            raise DatasetError(dataset, 'has test/ but no train/ folder: give both (and optionally val/)', root)
        groups = {s: os.path.join(root, s) for s in splits}
        stray = [t for t in top if t not in SPLIT_KEYS]
        if stray:
            raise DatasetError(dataset, f'mixes split folders (train/, ...) with other folders ({_listed(stray)}); '
                                        'put every class folder below train/, val/ or test/', root)
    else:
        groups = {'': root}
    out: dict[str, list[tuple[str, str]]] = {}
    for split, folder in groups.items():
        classes = _class_folders(folder)
        if not classes:
            raise DatasetError(dataset, 'holds no class folders (expected one folder of images per class)', folder)
        rows = []
        for key in classes:
            images = _class_images(os.path.join(folder, key), root, dataset, skipped)
            if not images:
                raise DatasetError(dataset, f'class folder {key!r} holds no images ({", ".join(IMG_EXTENSIONS)})',
                                   os.path.join(folder, key))
            rows += [(rel, key) for rel in images]
        out[split] = rows
    loose = [n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n)) and not n.startswith('.')
             and os.path.splitext(n)[1].lower() in IMG_EXTENSIONS]
    if loose:
        skipped += loose  # images beside the class folders belong to no class
    return out, skipped


LIST_HEADER_CELLS = ('path', 'image', 'file', 'filename')
"""A CSV list's first row is a header when its first cell is one of these."""


def list_rows(path: str, dataset: str, bad_line: Callable[[str], None] | None = None
              ) -> list[tuple[int, Any, Any, Any]]:
    """``(line, path, label, split)`` of a CSV or JSONL list. An unreadable list or a malformed line is a
    :class:`DatasetError` naming it, or, with ``bad_line``, said to it and left out (``prepare_data verify``
    lists every such line)."""
    def bad(why: str) -> None:
        if bad_line is None:
            raise DatasetError(dataset, why, path)
        bad_line(why)

    try:
        text = Path(path).read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as err:
        bad(f'cannot read the list ({err})')
        return []
    rows = []
    if path.endswith('.jsonl'):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError) as err:
                bad(f'line {number} is not JSON ({err})')
                continue
            if not isinstance(entry, dict) or 'path' not in entry or 'label' not in entry:
                bad(f'line {number} is not {{"path": ..., "label": ...}}')
                continue
            rows.append((number, entry['path'], entry['label'], entry.get('split')))
        return rows
    for number, cells in enumerate(csv.reader(io.StringIO(text)), 1):
        if not cells or not any(c.strip() for c in cells):
            continue
        if number == 1 and cells[0].strip().lower() in LIST_HEADER_CELLS:
            continue  # a header
        if not 2 <= len(cells) <= 3:
            bad(f'line {number} is not "path,label" or "path,label,split" ({cells!r})')
            continue
        rows.append((number, cells[0].strip(), cells[1].strip(), cells[2].strip() if len(cells) > 2 else None))
    return rows


def _read_list(path: str, dataset: str) -> dict[str, list[tuple[str, str]]]:
    """``{split or "": [(relpath, label key)]}`` of a list (rows checked: paths, repeats, splits)."""
    root = os.path.dirname(path)
    out: dict[str, list[tuple[str, str]]] = {}
    seen: dict[str, int] = {}
    with_split = None
    for number, image, label, split in list_rows(path, dataset):
        where = f'line {number}'
        if not isinstance(image, str) or not image:
            raise DatasetError(dataset, f'{where}: path {image!r} is not a file path', path)
        if isinstance(label, bool) or not isinstance(label, (str, int)) or label == '':
            raise DatasetError(dataset, f'{where}: label {label!r} is not a class name or index', path)
        full = os.path.normpath(os.path.join(root, os.path.expanduser(image)))
        if full in seen:
            raise DatasetError(dataset, f'{where} repeats the image of line {seen[full]} ({image})', path)
        seen[full] = number
        if not os.path.isfile(full):
            raise DatasetError(dataset, f'{where}: no such image {full}', path)
        if split in ('', None):
            split = None
        elif split not in SPLIT_KEYS:
            raise DatasetError(dataset, f'{where}: split {split!r} is not train, val or test', path)
        if with_split is None:
            with_split = split is not None
        elif with_split != (split is not None):
            raise DatasetError(dataset, f'{where}: some rows name a split and others do not; name one for every '
                                        'row or for none', path)
        out.setdefault(split or '', []).append((os.path.relpath(full, root), str(label)))
    if not out:
        raise DatasetError(dataset, 'the list names no images', path)
    if with_split and 'train' not in out:
        raise DatasetError(dataset, 'the list names no train rows', path)
    return out


def _assign_labels(groups: Mapping[str, list[tuple[str, str]]], names_file: str | None, dataset: str,
                   where: str) -> tuple[list[str], dict[str, int]]:
    """Class names in label order and key -> label, from the keys used and the names file."""
    used = list(dict.fromkeys(key for rows in groups.values() for _, key in rows))
    if names_file is not None:
        order, names = read_names_file(names_file, dataset)
        if used and all(k.isdigit() for k in used) and not any(k in names for k in used):
            order, names = [str(i) for i in range(len(order))], {str(i): names[k] for i, k in enumerate(order)}
        missing = [k for k in used if k not in names]
        if missing:
            raise DatasetError(dataset, f'labels not in the names file {names_file}: {_listed(missing)}', where)
        unused = [k for k in order if k not in used]
        if unused:
            raise DatasetError(dataset, f'classes of the names file with no images: {_listed(unused)}', names_file)
    else:
        if all(k.isdigit() for k in used):
            raise DatasetError(dataset, 'the labels are indices: give their names with names=<names file>', where)
        order = sorted(used, key=lambda k: readable(k).lower())
        names = {k: readable(k) for k in order}
    _check_distinct({k: names[k] for k in order}, dataset, names_file or where)
    return [names[k] for k in order], {k: i for i, k in enumerate(order)}


def cut_split(rows: list[tuple[str, int]], fractions: tuple[float, float], seed: int, classnames: Sequence[str],
              dataset: str, where: str, too_small: Callable[[str], None] | None = None
              ) -> dict[str, list[tuple[str, int]]]:
    """CoOp's ``read_and_split_data`` with a seeded shuffle: per class, ``round(n * train)`` train,
    ``round(n * val)`` val, the rest test. A class too small for that is a :class:`DatasetError` naming it, or,
    with ``too_small``, said to it and kept whole in train (``prepare_data verify`` lists every such class)."""
    rng = random.Random(seed)
    by_label: dict[int, list[tuple[str, int]]] = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    out: dict[str, list[tuple[str, int]]] = {k: [] for k in SPLIT_KEYS}
    for label in sorted(by_label):
        images = sorted(by_label[label])
        rng.shuffle(images)
        n = len(images)
        n_train, n_val = round(n * fractions[0]), round(n * fractions[1])
        if n_train < 1 or n_val < 1 or n - n_train - n_val < 1:
            why = (f'class {classnames[label]!r} has {n} images: too few to split into train, val and test at '
                   f'{fractions[0]:g} / {fractions[1]:g} / the rest; add images, or give train/ and test/ folders '
                   '(or a split column)')
            if too_small is None:
                raise DatasetError(dataset, why, where)
            too_small(why)
            out['train'] += images
            continue
        out['train'] += images[:n_train]
        out['val'] += images[n_train:n_train + n_val]
        out['test'] += images[n_train + n_val:]
    return out


def carve_val(rows: list[tuple[str, int]], seed: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Dassl's ``split_trainval`` (seeded): ``round(n * 0.2)`` of each class's train images become val."""
    rng = random.Random(seed)
    by_label: dict[int, list[tuple[str, int]]] = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    train, val = [], []
    for label in sorted(by_label):
        images = sorted(by_label[label])
        rng.shuffle(images)
        n_val = round(len(images) * TRAINVAL_VAL)
        val += images[:n_val]
        train += images[n_val:]
    return train, val


def read_user_layout(spec: Mapping[str, Any], dataset: str) -> tuple[dict[str, list[list[Any]]], str, list[str]]:
    """The split (``{"train"|"val"|"test": [[relpath, label, classname], ...]}``) a user dataset ``spec`` gives,
    the folder its paths are relative to, and the files passed over. A CoOp split file is returned as read."""
    path = spec['path']
    if os.path.isdir(path):
        groups, skipped = _read_folder(path, dataset)
        root = path
    elif path.endswith(LIST_SUFFIXES):
        root, skipped = os.path.dirname(path), []
        if path.endswith('.json'):
            return _read_coop_split(path, dataset), root, skipped
        groups = _read_list(path, dataset)
    else:
        raise DatasetError(dataset, f'is neither a folder nor a list ({", ".join(LIST_SUFFIXES)})', path)
    classnames, labels = _assign_labels(groups, spec.get('names'), dataset, path)
    labelled = {s: [(rel, labels[key]) for rel, key in rows] for s, rows in groups.items()}
    seed = int(spec.get('split_seed', 1))
    if '' in labelled:
        fractions = (float(spec.get('train', DEFAULT_TRAIN)), float(spec.get('val', DEFAULT_VAL)))
        cut = cut_split(labelled[''], fractions, seed, classnames, dataset, path)
    else:
        cut = {s: labelled.get(s, []) for s in SPLIT_KEYS}
        if not cut['val']:
            cut['train'], cut['val'] = carve_val(cut['train'], seed)
        if not cut['test']:
            raise DatasetError(dataset, 'has train images but no test images (a test/ folder or "test" rows)', path)
    split = {s: [[Path(rel).as_posix(), label, classnames[label]] for rel, label in cut[s]] for s in SPLIT_KEYS}
    return split, root, skipped


def _read_coop_split(path: str, dataset: str) -> dict[str, list[list[Any]]]:
    try:
        data = json.loads(Path(path).read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise DatasetError(dataset, f'cannot read the split file ({err})', path) from None
    if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in SPLIT_KEYS):
        raise DatasetError(dataset, 'a split file must map "train", "val" and "test" to lists', path)
    return {k: data[k] for k in SPLIT_KEYS}


# ------------------------------------------------------------------------------------------ the reader
def default_split_path(spec: Mapping[str, Any], name: str) -> Path:
    """Where the split of user dataset ``name`` (``spec``) is read from: a CoOp split file given as the dataset
    itself, else ``split_file``, else ``<cache>/user_datasets/<name>/split.json``."""
    if spec['path'].endswith('.json') and os.path.isfile(spec['path']):
        return Path(spec['path'])  # a CoOp split file: read as it is
    if spec.get('split_file'):
        return Path(spec['split_file'])
    return cache_root() / 'user_datasets' / name / 'split.json'


@register_dataset('folder')
class UserDataset(SplitFileDataset):
    """A dataset of your own files (see the module): ``build_dataset('folder:/path/to/images', ...)``, or
    ``UserDataset(source='/path/to/images', split='train', num_shots=4)``.

    Args:
        dataset: The registered name (``folder-photos``) whose spec to read (see :mod:`vlprompt.user_datasets`).
        source: The folder or list, instead of a registered name (options as keyword arguments: ``names``,
            ``descriptions``, ``split_file``, ``split_seed``, ``train``, ``val``).
        data_root: Not used (the path is the dataset's own); accepted as every reader accepts it.
        **kwargs: ``split``, ``num_shots``, ``seed``, ``subsample``, ``transform``... of
            :class:`~vlprompt.datasets.base.BenchmarkDataset`.
    """

    picks_beside_data: ClassVar[bool] = False  # never write into the user's folder

    def __init__(self, dataset: str | None = None, source: str | os.PathLike[str] | None = None,
                 data_root: str | os.PathLike[str] | None = None, names: str | None = None,
                 descriptions: str | None = None, split_file: str | None = None, split_seed: int = 1,
                 train: float = DEFAULT_TRAIN, val: float = DEFAULT_VAL, **kwargs: Any) -> None:
        if source is None:
            if dataset is None:
                raise ValueError("UserDataset needs a registered name (dataset='folder-...') or a source path")
            spec = user_dataset(dataset)
            if spec is None:
                raise DatasetError(dataset, 'is no registered user dataset; name it by its path (folder:/path)')
        else:
            spec = {'path': os.path.abspath(os.fspath(source)), 'names': names, 'descriptions': descriptions,
                    'split_file': split_file, 'split_seed': split_seed, 'train': train, 'val': val}
            spec = {k: v for k, v in spec.items() if v is not None}
        self.spec = dict(spec)
        self.name = dataset or f'folder-{Path(self.spec["path"]).stem}'
        source_path = Path(self.spec['path'])
        self.dataset_dir = str(source_path if source_path.is_dir() else source_path.parent)
        super().__init__(data_root=data_root, **kwargs)

    def locate(self, data_root: str | os.PathLike[str] | None) -> Path:
        if not os.path.exists(self.spec['path']):
            raise DatasetError(self.name, 'the folder or list is gone', self.spec['path'])
        return Path(self.dataset_dir)

    @property
    def source_path(self) -> Path:
        return Path(self.spec['path'])

    @property
    def split_path(self) -> Path:
        return default_split_path(self.spec, self.name)

    @functools.cached_property
    def split_lists(self) -> dict[str, list[Datum]]:
        self.ensure_split_file()
        return super().split_lists

    def ensure_split_file(self) -> Path:
        """The split file, written on first use from the folder or list (atomically, never over a file with
        other content); an existing one is read as it is, with a warning when the source has images it lacks."""
        path = self.split_path
        if path == self.source_path:
            return path
        split, root, skipped = read_user_layout(self.spec, self.name)
        if skipped and not path.is_file():  # said once, when the split is made
            warnings.warn(f'[{self.name}] {len(skipped)} file(s) in {self.spec["path"]} are not images of a class '
                          f'folder and were passed over: {_listed(skipped)}', UserDatasetWarning, stacklevel=2)
        if os.path.realpath(root) != os.path.realpath(self.image_root):
            raise DatasetError(self.name, f'the split is relative to {root}, the reader to {self.image_root}', path)
        record = {**split, 'source': self.spec['path'],
                  'rule': 'CoOp split_zhou format; per class random.Random(split_seed).shuffle, round(n * train) '
                          'train, round(n * val) val, the rest test (vlprompt.datasets.user)'}
        text = json.dumps(record, indent=1)
        if path.is_file():
            try:
                current = json.loads(path.read_text(encoding='utf-8'))
            except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
                raise DatasetError(self.name, f'the split file cannot be read ({err}); remove it to write it again',
                                   path) from None
            if isinstance(current, dict) and current.get('source') not in (None, self.spec['path']):
                raise DatasetError(self.name, f'the split file was written for another dataset '
                                              f'({current.get("source")}, not {self.spec["path"]}); give another '
                                              'split_file or remove it', path)
            listed = {row[0] for k in SPLIT_KEYS for row in (current.get(k) or []) if isinstance(row, list) and row}
            new = [row[0] for k in SPLIT_KEYS for row in split[k] if row[0] not in listed]
            if new:
                warnings.warn(f'[{self.name}] {len(new)} image(s) of {self.spec["path"]} are not in its split file '
                              f'{path} (written on first use), and are left out: {_listed(new)}; remove the split '
                              'file to split again', UserDatasetWarning, stacklevel=2)
            return path
        return atomic_write_text(path, text)
