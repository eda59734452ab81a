"""Checking your own images (``folder:PATH``) before any training: every problem at once.

Used by ``tools/prepare_data.py verify --datasets folder:/path/to/images [--shots K]``. The reader
(:mod:`vlprompt.datasets.user`) stops at the first problem it meets; :func:`verify_user_dataset` scans the
folder or list on its own and collects, rather than raises:

* images per class and per split: from the ``train/`` ``val/`` ``test/`` folders or the list's split column,
  from the split file when one was written on first use (training reads that), or else the split the reader
  would make, computed in memory (the same seeded cut);
* files that are not images and images beside the class folders (the reader passes them over);
* empty class folders, a folder with no class folders, folders beside ``train/`` ``test/``, links that lead
  out of the folder;
* images that do not decode (``check_images``: each decoded with PIL, as training does);
* the same file (by SHA-256 of its bytes) in two splits: test images that were trained on;
* classes with fewer training images than ``shots``, and classes with no images in a split;
* class names that are one name once case, ``_`` and spaces are set aside;
* in a list: bad lines, labels not in the names file, repeated paths, missing files, by line number.

When the reader itself refuses the dataset, its message is kept (``reader_error``) and the scan's findings
are still reported. Nothing is written: not into the folder, not the split file, not the few-shot picks.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..user_datasets import parse_user_dataset, user_dataset, user_datasets
from .items import DatasetError
from .knowledge import Coverage, KnowledgeError, load_descriptions
from .loading import IMG_EXTENSIONS, probe_image
from .splitfile import SPLIT_KEYS
from .user import (
    DEFAULT_TRAIN,
    DEFAULT_VAL,
    LIST_SUFFIXES,
    carve_val,
    cut_split,
    default_split_path,
    list_rows,
    read_names_file,
    read_user_layout,
    readable,
)
from .verify import printable

__all__ = ['UserProblem', 'UserReport', 'format_user_reports', 'is_user_dataset', 'verify_user_dataset']

SHOWN = 50
"""Most problems of one kind printed (the rest as a count)."""
SHOWN_PAIRS = 5
"""Most duplicate pairs printed (the rest as a count)."""
COMPACT_CLASSES = 20
"""Above this many classes the counts table packs several classes a line."""


@dataclass
class UserProblem:
    """One thing wrong: ``kind`` is ``'error'`` (the reader refuses it, or an image is unusable) or
    ``'warning'`` (the reader goes on, likely not as meant); ``category`` groups problems of one sort."""

    kind: str
    category: str
    message: str
    path: str | None = None

    def line(self) -> str:
        return printable(': '.join(x for x in (self.message, self.path) if x))


@dataclass
class UserReport:
    """The outcome of checking one user dataset."""

    name: str
    path: str
    status: str = 'found'  #: 'found' (no problem), 'warnings', 'broken' (an error) or 'missing'
    layout: str = ''  #: the layout read ('class folders', 'class folders below train/ test/', 'CSV list', ...)
    split_source: str = ''  #: where the split comes from
    classnames: list[str] = field(default_factory=list)
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)  #: class -> split -> images
    counts: dict[str, int] = field(default_factory=dict)  #: split -> images
    images_checked: int = 0  #: images decoded (``check_images``)
    problems: list[UserProblem] = field(default_factory=list)
    reader_error: str | None = None  #: what the reader stops at, when it refuses the dataset
    knowledge: Coverage | None = None
    knowledge_error: str | None = None

    def ok(self) -> bool:
        return self.status == 'found'

    def add(self, kind: str, category: str, message: str, path: str | os.PathLike[str] | None = None) -> None:
        self.problems.append(UserProblem(kind, category, message, None if path is None else os.fspath(path)))


# ------------------------------------------------------------------------------------------ names
def is_user_dataset(name: str) -> bool:
    """Whether ``name`` is a registered user dataset (``folder-photos``) or a ``folder:PATH`` / existing path."""
    if user_dataset(name) is not None:
        return True
    try:
        return parse_user_dataset(name) is not None
    except KeyError:  # folder: with a bad path or option: a user dataset, badly named
        return True


def _resolve(name_or_spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """(the name, the spec) of a registered name, a ``folder:PATH`` or a spec; the name is the registered one
    when the spec is registered, else ``folder:PATH`` (nothing is registered here)."""
    if isinstance(name_or_spec, Mapping):
        spec: dict[str, Any] | None = dict(name_or_spec)
    else:
        spec = user_dataset(name_or_spec)
        if spec is not None:
            return name_or_spec, dict(spec)
        spec = parse_user_dataset(name_or_spec)  # a UserDatasetError (KeyError) names a bad path or option
        if spec is None:
            raise KeyError(f'{name_or_spec!r} is no user dataset: give folder:PATH or a registered name')
    for name, known in user_datasets().items():
        if known == spec:
            return name, spec
    return f'folder:{spec["path"]}', spec


# ------------------------------------------------------------------------------------------ scanning
def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMG_EXTENSIONS


def _inside(path: str, root: str) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(root)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def _entries(folder: str) -> tuple[list[str], list[str]]:
    """The visible sub-folders and files of ``folder`` (sorted), as the reader sees them."""
    dirs, files = [], []
    with os.scandir(folder) as it:
        for e in it:
            if e.name.startswith('.'):
                continue
            if e.is_dir():
                dirs.append(e.name)
            elif e.is_file() or e.is_symlink():
                files.append(e.name)
    return sorted(dirs), sorted(files)


@dataclass
class _Scan:
    """What the independent scan found: ``{split or '': [(relpath, key)]}``, where each key is used,
    every image file (relative to ``root``) and, for lists, each image's line."""

    root: str
    groups: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    where: dict[str, list[str]] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)


def _scan_folder(root: str, spec: Mapping[str, Any], report: UserReport) -> _Scan:
    scan = _Scan(root)
    top_dirs, top_files = _entries(root)
    exempt = {os.path.realpath(spec[k]) for k in ('names', 'descriptions', 'split_file') if spec.get(k)}
    for name in top_files:
        full = os.path.join(root, name)
        if os.path.realpath(full) in exempt:
            continue
        if _is_image(name):
            report.add('warning', 'loose', 'image beside the class folders: it belongs to no class and is passed '
                       'over (move it into its class folder)', full)
        else:
            report.add('warning', 'not-image', 'not an image, beside the class folders (passed over)', full)
    splits = [s for s in SPLIT_KEYS if s in top_dirs]
    if 'train' in splits or 'test' in splits:
        report.layout = 'class folders below ' + ' '.join(f'{s}/' for s in splits)
        if 'train' not in splits:
            report.add('error', 'layout', 'has test/ but no train/ folder: give both (and optionally val/)', root)
        for stray in (d for d in top_dirs if d not in SPLIT_KEYS):
            report.add('error', 'layout', f'folder {stray!r} beside the split folders: put every class folder '
                       'below train/, val/ or test/', os.path.join(root, stray))
        folders = {s: os.path.join(root, s) for s in splits}
    else:
        report.layout = 'class folders'
        folders = {'': root}
    for split, folder in folders.items():
        classes, files = _entries(folder) if folder != root else (top_dirs, [])
        for name in files:
            full = os.path.join(folder, name)
            what = 'image beside the class folders: it belongs to no class' if _is_image(name) else 'not an image'
            report.add('warning', 'loose' if _is_image(name) else 'not-image', f'{what} (passed over)', full)
        if not classes:
            report.add('error', 'layout', 'holds no class folders (expected one folder of images per class)', folder)
        rows = scan.groups.setdefault(split, [])
        for key in classes:
            found = _scan_class(os.path.join(folder, key), root, report)
            if not found:
                report.add('error', 'empty', f'class folder {key!r} holds no images ({", ".join(IMG_EXTENSIONS)})',
                           os.path.join(folder, key))
            rows += [(rel, key) for rel in found]
            scan.images += found
            scan.where.setdefault(key, []).append(os.path.relpath(os.path.join(folder, key), root))
    return scan


def _scan_class(folder: str, root: str, report: UserReport) -> list[str]:
    """The images below one class folder (relative to ``root``), naming every other file and outward link."""
    found = []
    for current, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        for d in dirs:
            full = os.path.join(current, d)
            if os.path.islink(full) and not _inside(full, root):
                report.add('error', 'link', 'a symbolic link leads out of the dataset folder', full)
        for name in sorted(files):
            full = os.path.join(current, name)
            if name.startswith('.'):
                continue
            if os.path.islink(full) and not _inside(full, root):
                report.add('error', 'link', 'a symbolic link leads out of the dataset folder', full)
            elif _is_image(name):
                found.append(os.path.relpath(full, root))
            else:
                report.add('warning', 'not-image', 'not an image (passed over)', full)
    return found


def _scan_list(path: str, report: UserReport) -> _Scan:
    root = os.path.dirname(path)
    scan = _Scan(root)
    report.layout = 'JSONL list' if path.endswith('.jsonl') else 'CSV list'
    seen: dict[str, int] = {}
    with_split: list[int] = []
    without_split: list[int] = []
    for number, image, label, split in list_rows(path, report.name,
                                                 lambda why: report.add('error', 'list', why, path)):
        where = f'line {number}'
        if not isinstance(image, str) or not image:
            report.add('error', 'list', f'{where}: path {image!r} is not a file path', path)
            continue
        if isinstance(label, bool) or not isinstance(label, (str, int)) or label == '':
            report.add('error', 'list', f'{where}: label {label!r} is not a class name or index', path)
            continue
        full = os.path.normpath(os.path.join(root, os.path.expanduser(image)))
        if full in seen:
            report.add('error', 'repeat', f'{where} repeats the image of line {seen[full]} ({image})', path)
            continue
        seen[full] = number
        if not os.path.isfile(full):
            report.add('error', 'missing', f'{where}: no such image {printable(full)}', path)
            continue
        if split in ('', None):
            split = None
            without_split.append(number)
        elif split not in SPLIT_KEYS:
            report.add('error', 'list', f'{where}: split {split!r} is not train, val or test', path)
            continue
        else:
            with_split.append(number)
        rel = os.path.relpath(full, root)
        scan.groups.setdefault(split or '', []).append((rel, str(label)))
        scan.where.setdefault(str(label), []).append(where)
        scan.images.append(rel)
        scan.lines[rel] = number
    if with_split and without_split:
        report.add('error', 'list', f'some rows name a split and others do not (no split on line(s) '
                   f'{_numbers(without_split)}); name one for every row or for none', path)
        scan.groups.pop('', None)  # planned from the rows that name their split
    if not scan.images:
        report.add('error', 'list', 'the list names no usable images', path)
    elif with_split and 'train' not in scan.groups:
        report.add('error', 'list', 'the list names no train rows', path)
    return scan


def _scan_coop_split(path: str, report: UserReport) -> tuple[_Scan, dict[str, str]]:
    """A CoOp split file read as it is: its rows checked, keys are the labels (as text)."""
    root = os.path.dirname(path)
    scan = _Scan(root)
    report.layout = 'CoOp split file'
    names: dict[str, str] = {}
    try:
        data = json.loads(Path(path).read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        report.add('error', 'list', f'cannot read the split file ({err})', path)
        return scan, names
    if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in SPLIT_KEYS):
        report.add('error', 'list', 'a split file must map "train", "val" and "test" to lists', path)
        return scan, names
    seen: dict[str, str] = {}
    for split in SPLIT_KEYS:
        for i, row in enumerate(data[split]):
            where = f'split {split!r} row {i}'
            if (not isinstance(row, list) or len(row) != 3 or not isinstance(row[0], str) or not row[0]
                    or isinstance(row[1], bool) or not isinstance(row[1], int) or row[1] < 0
                    or not isinstance(row[2], str) or not row[2].strip()):
                report.add('error', 'list', f'{where}: {row!r} is not [relpath, label, classname]', path)
                continue
            rel, label, classname = os.path.normpath(row[0]), str(row[1]), ' '.join(row[2].split())
            if rel in seen:
                report.add('error', 'repeat', f'{where} repeats the image of {seen[rel]} ({row[0]})', path)
                continue
            seen[rel] = where
            if names.setdefault(label, classname) != classname:
                report.add('error', 'names', f'{where}: label {label} is named {classname!r} here and '
                           f'{names[label]!r} before', path)
            if not os.path.isfile(os.path.join(root, rel)):
                report.add('error', 'missing', f'{where}: no such image {printable(os.path.join(root, rel))}', path)
                continue
            scan.groups.setdefault(split, []).append((rel, label))
            scan.where.setdefault(label, []).append(where)
            scan.images.append(rel)
    return scan, names


# ------------------------------------------------------------------------------------------ classes and split
def _numbers(numbers: Sequence[int], shown: int = 10) -> str:
    more = f' and {len(numbers) - shown} more' if len(numbers) > shown else ''
    return ', '.join(map(str, numbers[:shown])) + more


def _where(places: Sequence[str]) -> str:
    lines = [int(p[5:]) for p in places if p.startswith('line ')]
    if lines and len(lines) == len(places):
        return ('line ' if len(lines) == 1 else 'lines ') + _numbers(lines)
    return ', '.join(dict.fromkeys(places))


def _plan_classes(scan: _Scan, spec: Mapping[str, Any], dataset: str, report: UserReport, source: str,
                  fixed: Mapping[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Class keys in label order and key -> class name, as the reader assigns them; every label missing from
    the names file, every class of it with no image and every pair of colliding names is named."""
    used = list(dict.fromkeys(key for rows in scan.groups.values() for _, key in rows))
    if fixed is not None:  # a CoOp split file: its labels and names
        order = sorted(fixed, key=int)
        names = dict(fixed)
    else:
        names_file = spec.get('names')
        order, names = [], {}
        if names_file is not None:
            try:
                order, names = read_names_file(names_file, dataset)
            except DatasetError as err:
                report.add('error', 'names', err.message, err.path)
                names_file = None
        if names_file is not None:
            if used and all(k.isdigit() for k in used) and not any(k in names for k in used):
                order, names = [str(i) for i in range(len(order))], {str(i): names[k] for i, k in enumerate(order)}
            for key in (k for k in used if k not in names):
                report.add('error', 'names', f'label {key!r} ({_where(scan.where.get(key, []))}) is not in the '
                           f'names file {printable(names_file)}', source)
                names[key] = readable(key)
                order.append(key)
            for key in (k for k in order if k not in used):
                report.add('error', 'names', f'class {key!r} of the names file has no images', names_file)
            order = [k for k in order if k in used]
        else:
            if used and all(k.isdigit() for k in used):
                report.add('error', 'names', 'the labels are indices: give their names with names=<names file>',
                           source)
            order = sorted(used, key=lambda k: readable(k).lower())
            names = {k: readable(k) for k in order}
    same: dict[str, list[str]] = {}
    for key in order:
        same.setdefault(' '.join(names[key].replace('_', ' ').lower().split()), []).append(key)
    for keys in (k for k in same.values() if len(k) > 1):
        places = '; '.join(f'{k!r} ({_where(scan.where.get(k, []))})' for k in keys)
        report.add('error', 'collision', f'classes {places} are one name once case, "_" and spaces are set aside '
                   f'({names[keys[0]]!r}); rename all but one', source)
    return order, names


def _plan_split(scan: _Scan, order: list[str], names: Mapping[str, str], spec: Mapping[str, Any],
                report: UserReport, source: str) -> dict[str, list[list[Any]]]:
    """The split the reader would make from ``scan`` (``{split: [[relpath, label, classname]]}``)."""
    labels = {k: i for i, k in enumerate(order)}
    classnames = [names[k] for k in order]
    labelled = {s: [(rel, labels[key]) for rel, key in rows if key in labels] for s, rows in scan.groups.items()}
    seed = int(spec.get('split_seed', 1))
    if '' in labelled:
        fractions = (float(spec.get('train', DEFAULT_TRAIN)), float(spec.get('val', DEFAULT_VAL)))
        cut = cut_split(labelled[''], fractions, seed, classnames, report.name, source,
                        too_small=lambda why: report.add('error', 'too-few', why, source))
        report.split_source = (f'computed in memory as the reader makes it on first use (split_seed {seed}, '
                               f'{fractions[0]:g} train / {fractions[1]:g} val / the rest test per class)')
    else:
        cut = {s: labelled.get(s, []) for s in SPLIT_KEYS}
        given = ', '.join(s for s in SPLIT_KEYS if cut[s])
        report.split_source = ('given by ' + ('the split folders' if report.layout.startswith('class') else
                                              "the list's split column" if 'list' in report.layout else
                                              'the split file') + f' ({given})')
        if cut['train'] and not cut['val'] and report.layout != 'CoOp split file':
            cut['train'], cut['val'] = carve_val(cut['train'], seed)
            report.split_source += f'; val carved from train in memory (20 % per class, split_seed {seed})'
        if cut['train'] and not cut['test']:
            report.add('error', 'layout', 'has train images but no test images (a test/ folder or "test" rows)',
                       source)
    return {s: [[Path(rel).as_posix(), label, classnames[label]] for rel, label in cut[s]] for s in SPLIT_KEYS}


def _written_split(spec: Mapping[str, Any], name: str, scan: _Scan, report: UserReport
                   ) -> dict[str, list[list[Any]]] | None:
    """The split file written on first use (training reads it as it is), when there is one for this dataset."""
    path = default_split_path(spec, name)  # where the reader keeps it
    if name.startswith('folder:') or os.path.realpath(path) == os.path.realpath(spec['path']) or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        report.add('error', 'split-file', f'the split file cannot be read ({err}); remove it to write it again', path)
        return None
    if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in SPLIT_KEYS):
        report.add('error', 'split-file', 'the split file does not map "train", "val" and "test" to lists; remove '
                   'it to write it again', path)
        return None
    if data.get('source') not in (None, spec['path']):
        report.add('error', 'split-file', f'the split file was written for another dataset ({data.get("source")}); '
                   'give another split_file or remove it', path)
        return None
    split = {k: [r for r in data[k] if isinstance(r, list) and len(r) == 3 and isinstance(r[0], str)]
             for k in SPLIT_KEYS}
    listed = {os.path.normpath(r[0]) for rows in split.values() for r in rows}
    new = [rel for rel in scan.images if os.path.normpath(rel) not in listed]
    if new:
        report.add('warning', 'split-file', f'{len(new)} image(s) are not in the split file written on first use '
                   f'and are left out of training and testing, e.g. {printable(new[0])}; remove the split file to '
                   'split again', path)
    gone = [r[0] for rows in split.values() for r in rows if not os.path.isfile(os.path.join(scan.root, r[0]))]
    for rel in gone:
        report.add('error', 'missing', f'an image the split file lists is gone: {printable(rel)}', path)
    report.split_source = f'read from the split file written on first use ({printable(str(path))})'
    return split


# ------------------------------------------------------------------------------------------ files
def _inspect(path: str, check_images: bool) -> tuple[str | None, str | None]:
    """(SHA-256 of the bytes, what is wrong with the image or ``None``)."""
    try:
        digest = hashlib.sha256()
        with open(path, 'rb') as handle:
            for block in iter(lambda: handle.read(1 << 20), b''):
                digest.update(block)
        hexdigest: str | None = digest.hexdigest()
    except OSError:
        hexdigest = None
    return hexdigest, (probe_image(path, full=True) if check_images else None)


def _check_files(scan: _Scan, split: Mapping[str, list[list[Any]]], report: UserReport, check_images: bool,
                 workers: int | None, progress: bool) -> None:
    paths = list(dict.fromkeys(scan.images))
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(lambda rel: _inspect(os.path.join(scan.root, rel), check_images), paths),
                            total=len(paths), desc=f'{report.name}: checking', unit='img', leave=False,
                            disable=not progress or len(paths) <= 2000))
    report.images_checked = len(paths) if check_images else 0
    for rel, (_, err) in zip(paths, results, strict=True):
        if err is not None:
            where = f' (line {scan.lines[rel]})' if rel in scan.lines else ''
            report.add('error', 'unreadable', f'unreadable image{where} ({err})', os.path.join(scan.root, rel))
    split_of = {os.path.normpath(r[0]): (s, str(r[2])) for s in SPLIT_KEYS for r in split.get(s, [])}
    class_of: dict[str, str] = {}
    by_digest: dict[str, list[tuple[str, str]]] = {}
    for rel, (digest, _) in zip(paths, results, strict=True):
        s, classname = split_of.get(os.path.normpath(rel), (None, ''))
        if digest is not None and s is not None:
            by_digest.setdefault(digest, []).append((s, rel))
            class_of[rel] = classname
    pairs = []
    for entries in by_digest.values():
        first: dict[str, str] = {}
        for s, rel in entries:
            first.setdefault(s, rel)
        kept = [(s, first[s]) for s in SPLIT_KEYS if s in first]
        pairs += [(a, b) for i, a in enumerate(kept) for b in kept[i + 1:]]
    for (sa, a), (sb, b) in sorted(pairs, key=lambda p: (SPLIT_KEYS.index(p[1][0]), p[0][1])):
        report.add('warning', 'duplicate', f'the same file in {sa} and {sb} (SHA-256 of its bytes): '
                   f'{printable(a)} (class {class_of[a]!r}) = {printable(b)} (class {class_of[b]!r})')


def _check_counts(split: Mapping[str, list[list[Any]]], classnames: Sequence[str], report: UserReport,
                  shots: int | None) -> None:
    counts: dict[str, dict[str, int]] = {c: dict.fromkeys(SPLIT_KEYS, 0) for c in classnames}
    for s in SPLIT_KEYS:
        for row in split.get(s, []):
            counts.setdefault(str(row[2]), dict.fromkeys(SPLIT_KEYS, 0))[s] += 1
    report.classnames = list(counts)
    report.class_counts = counts
    report.counts = {s: sum(c[s] for c in counts.values()) for s in SPLIT_KEYS}
    for s in SPLIT_KEYS:
        if report.counts[s]:
            for c in (c for c, n in counts.items() if n[s] == 0):
                report.add('warning', f'no-{s}', f'class {c!r} has no {s} images')
    if shots:
        for c, n in counts.items():
            if n['train'] < shots:
                report.add('warning', 'shots', f'class {c!r} has {n["train"]} training image(s), fewer than '
                           f'--shots {shots} (trained on all it has)')


# ------------------------------------------------------------------------------------------ the check
def verify_user_dataset(name_or_spec: str | Mapping[str, Any], shots: int | None = None, check_images: bool = True,
                        workers: int | None = None, progress: bool = False,
                        knowledge: str | os.PathLike[str] | None = None) -> UserReport:
    """Check one user dataset (a registered name such as ``folder-photos``, ``folder:PATH[?options]``, or a
    spec) and report every problem; never raises for problems of the data, writes nothing.

    ``shots``: name the classes with fewer training images. ``check_images``: decode every image.
    ``knowledge``: a description file whose class coverage is reported (default: the spec's ``descriptions``).
    A bad ``folder:`` path or option is a :class:`~vlprompt.user_datasets.UserDatasetError` (a ``KeyError``).
    """
    name, spec = _resolve(name_or_spec)
    assert spec is not None
    path = spec['path']
    report = UserReport(name, path)
    if not os.path.exists(path):
        report.status = 'missing'
        report.add('error', 'missing', 'the folder or list is gone', path)
        return report
    fixed = None
    try:
        if os.path.isdir(path):
            scan = _scan_folder(path, spec, report)
        elif path.endswith('.json'):
            scan, fixed = _scan_coop_split(path, report)
        elif path.endswith(LIST_SUFFIXES):
            scan = _scan_list(path, report)
        else:
            report.status = 'broken'
            report.add('error', 'layout', f'is neither a folder nor a list ({", ".join(LIST_SUFFIXES)})', path)
            return report
    except OSError as err:
        report.status = 'broken'
        report.add('error', 'layout', f'cannot be read ({err})', path)
        return report
    order, names = _plan_classes(scan, spec, name, report, path, fixed)
    planned = _plan_split(scan, order, names, spec, report, path)
    try:
        split, _, _ = read_user_layout(spec, name)
    except (DatasetError, OSError) as err:
        report.reader_error = str(err)
        split = planned
        if not any(p.kind == 'error' for p in report.problems):  # the scan missed what the reader found
            report.add('error', 'reader', str(err))
    if fixed is not None:  # a CoOp split file is returned as read: its checked rows instead
        split = planned
    written = _written_split(spec, name, scan, report)
    if written is not None:  # training reads it as it is: its classes and counts
        split = written
        labels = {(r[1] if isinstance(r[1], int) else -1, str(r[2])) for rows in split.values() for r in rows}
        classnames = list(dict.fromkeys(c for _, c in sorted(labels)))
    else:
        classnames = [names[k] for k in order]
    _check_files(scan, split, report, check_images, workers, progress)
    _check_counts(split, classnames, report, shots)
    source = knowledge if knowledge is not None else spec.get('descriptions')
    if source is not None:
        try:
            report.knowledge = load_descriptions(source).coverage(report.classnames)
        except KnowledgeError as err:
            report.knowledge_error = str(err)
    kinds = {p.kind for p in report.problems}
    report.status = 'broken' if 'error' in kinds else 'warnings' if kinds else 'found'
    return report


# ------------------------------------------------------------------------------------------ output
def _counts_table(report: UserReport) -> list[str]:
    if not report.class_counts:
        return []
    splits = [s for s in SPLIT_KEYS if report.counts.get(s)] or list(SPLIT_KEYS)
    rows = {printable(c): [n[s] for s in splits] for c, n in report.class_counts.items()}
    if len(rows) <= COMPACT_CLASSES:
        width = max(len(c) for c in [*rows, 'class']) + 2
        lines = [f'    {"class":<{width}}' + ''.join(f'{s:>7}' for s in splits) + f'{"total":>7}']
        lines += [f'    {c:<{width}}' + ''.join(f'{n:>7,}' for n in ns) + f'{sum(ns):>7,}' for c, ns in rows.items()]
        return lines
    cells = [f'{c} {"/".join(str(n) for n in ns)}' for c, ns in rows.items()]
    width = max(len(c) for c in cells) + 2
    per_line = max(1, 96 // width)
    lines = [f'    classes ({"/".join(splits)} images each):']
    for i in range(0, len(cells), per_line):
        lines.append('      ' + ''.join(f'{c:<{width}}' for c in cells[i:i + per_line]).rstrip())
    return lines


def _problem_lines(problems: Iterable[UserProblem]) -> list[str]:
    lines, shown, hidden = [], {}, {}
    for p in problems:
        cap = SHOWN_PAIRS if p.category == 'duplicate' else SHOWN
        shown[p.category] = shown.get(p.category, 0) + 1
        if shown[p.category] > cap:
            hidden[p.category] = hidden.get(p.category, 0) + 1
            continue
        lines.append(f'    {p.kind}: {p.line()}')
    for category, n in hidden.items():
        what = 'duplicate pairs' if category == 'duplicate' else f'problems of this kind ({category})'
        lines.append(f'    ... and {n} more {what}')
    return lines


def format_user_reports(reports: Iterable[UserReport], check_images: bool = True) -> str:
    """The reports in ``prepare_data verify``'s style: one row per dataset, its counts per class and split, then
    every problem on its own line naming the file, line or class."""
    reports = list(reports)
    mode = 'decoded every image' if check_images else 'images not decoded (--no-check-images)'
    lines = [f'Your datasets  ({mode}; nothing written: a split not yet written is computed in memory)', '']
    width = max([len(printable(r.name)) for r in reports] + [7]) + 2
    lines.append(f'{"dataset":<{width}}{"status":<10}{"classes":<9}images')
    for r in reports:
        images = '  '.join(f'{s} {n:,}' for s, n in r.counts.items()) or '-'
        classes = str(len(r.classnames)) if r.classnames else '-'
        lines.append(f'{printable(r.name):<{width}}{r.status:<10}{classes:<9}{images}')
        lines.append(f'    source: {printable(r.path)}' + (f' ({r.layout})' if r.layout else ''))
        if r.split_source:
            lines.append(f'    split: {r.split_source}')
        lines += _counts_table(r)
        if r.reader_error:
            lines.append(f'    the reader stops at: {printable(r.reader_error.splitlines()[0])}')
        lines += _problem_lines(r.problems)
        if r.knowledge is not None:
            lines.append(f'    descriptions: {printable(r.knowledge.summary())}')
        elif r.knowledge_error:
            lines.append(f'    descriptions: unusable: {printable(r.knowledge_error)}')
    tally = {s: sum(r.status == s for r in reports) for s in ('found', 'warnings', 'broken', 'missing')}
    lines += ['', ', '.join(f'{n} {s}' for s, n in tally.items()) + '.']
    bad = [f'{printable(r.name)} ({len(r.problems)} problem{"s" if len(r.problems) != 1 else ""})'
           for r in reports if not r.ok()]
    lines.append(f'Fix before training: {", ".join(bad)}' if bad else 'No problem found in the requested datasets.')
    return '\n'.join(lines)
