"""Checking a data root: is each dataset there, complete, and as large as the published one?

Used by ``tools/prepare_data.py verify``. A dataset is

* ``missing`` when its folder or one of its required files/folders is absent,
* ``broken`` when it is there but cannot be used: unparsable split file, class count different
  from the published one, an empty class, listed images absent or (with ``check_images``)
  unreadable,
* ``found`` otherwise. Image counts are compared with the published ones and marked when they
  differ, which only fails the check in strict mode (a partial copy can still be usable).

Every problem found is reported, not only the first: a wrong class count does not stop the split
and image checks. Paths are printed with undecodable bytes of non-UTF-8 file names as ``\\xNN``
escapes (:func:`printable`), so the report prints on any terminal encoding.

When a description file is configured (``knowledge``, or a ``knowledge.json`` / ``knowledge.tsv`` in the
dataset's folder, :mod:`.knowledge`), the report also says how many classes it describes and
names the first missing one; descriptions are optional, so this never changes the status.

Published counts (train / val / test) are those of the CoOp paper's dataset table for the 11
benchmarks, the official sizes for ImageNet and its variants, and CODaN's README; a reader can carry
its own (``published``: the ELEVATER tasks, from the toolkit's dataset list). Images inside zip
archives (``<archive>.zip@<member>``, ELEVATER's layout) are checked as archive members.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .base import SPLITS, BenchmarkDataset
from .builder import get_dataset_class
from .items import DatasetError, Datum
from .knowledge import Coverage, KnowledgeError, find_knowledge_file, load_descriptions
from .loading import image_exists, unreadable_images

__all__ = ['DatasetReport', 'Problem', 'format_reports', 'printable', 'verify_dataset']

_EXAMPLES = 3


@dataclass
class Problem:
    """One thing wrong: what, the exact path, and where to get it."""

    kind: str  # 'missing' or 'broken'
    message: str
    path: str | None = None
    hint: str | None = None


@dataclass
class DatasetReport:
    """The outcome of checking one dataset."""

    name: str
    status: str = 'found'
    path: Path | None = None
    num_classes: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    knowledge: Coverage | None = None  #: description coverage, when a description file is configured
    knowledge_error: str | None = None  #: why the configured description file could not be read

    @property
    def count_mismatch(self) -> bool:
        """Whether a class or image count differs from the published one."""
        if self.num_classes is not None and self.num_classes != self.published.get('classes', self.num_classes):
            return True
        return any(self.published.get(s, n) != n for s, n in self.counts.items())

    def ok(self, strict: bool = False) -> bool:
        """Usable (and, when ``strict``, the same size as published)."""
        return self.status == 'found' and not (strict and self.count_mismatch)


def _splits_of(reader: BenchmarkDataset) -> list[str]:
    splits = [s for s in SPLITS + reader.extra_splits
              if not (reader.is_test_only and s in ('train', 'val')) and not (s == 'val' and not reader.has_val)]
    return splits


def printable(text: str) -> str:
    """``text`` with the bytes of a non-UTF-8 file name (held as lone surrogates by Python's
    ``surrogateescape``) written as ``\\xNN``, so it can be encoded and printed."""
    if not any('\udc80' <= c <= '\udcff' for c in text):
        return text
    return ''.join(f'\\x{ord(c) - 0xdc00:02x}' if '\udc80' <= c <= '\udcff' else c for c in text)


def verify_dataset(name: str, data_root: str | os.PathLike[str] | None = None, check_images: bool = False,
                   progress: bool = False, workers: int | None = None,
                   knowledge: str | os.PathLike[str] | None = None) -> DatasetReport:
    """Check one dataset under ``data_root``; never raises for problems of the data (they are reported).

    ``knowledge``: a description file whose class coverage is reported (default: the dataset
    folder's ``knowledge.json`` / ``knowledge.tsv`` when there is one).
    """
    cls = get_dataset_class(name)
    if cls.name == 'folder':
        raise ValueError(f'{name} is a user dataset: check it with vlprompt.datasets.user_verify.verify_user_dataset '
                         '(tools/prepare_data.py verify --datasets folder:PATH)')
    report = DatasetReport(cls.name, published=dict(cls.published))
    try:
        reader = cls.inspect(data_root)
    except DatasetError as err:
        report.status = 'missing'
        report.problems.append(Problem('missing', err.message, err.path, err.hint))
        return report
    report.path = reader.dataset_path
    if not reader.dataset_path.is_dir():
        report.status = 'missing'
        report.problems.append(Problem('missing', 'dataset folder not found', str(reader.dataset_path),
                                       reader.howto()))
        return report
    for path, hint in reader.missing_files():
        report.problems.append(Problem('missing', '', path, hint))
    if report.problems:
        report.status = 'missing'
        return report

    def broken(err: DatasetError) -> None:
        report.status = 'broken'
        report.problems.append(Problem('broken', err.message, err.path, err.hint))

    try:
        classnames = reader.read_classnames()
    except DatasetError as err:
        broken(err)
        return report
    report.num_classes = len(classnames)
    source = knowledge if knowledge is not None else find_knowledge_file(reader.dataset_path)
    if source is not None:
        try:
            report.knowledge = load_descriptions(source).coverage(classnames)
        except KnowledgeError as err:
            report.knowledge_error = str(err)
    for err in reader.classname_problems(classnames):
        broken(err)  # reported, and the splits are still checked with these names
    reader.__dict__['all_classnames'] = classnames  # fill the cached property without its checks
    items: list[tuple[str, Datum]] = []
    for split in _splits_of(reader):
        try:
            split_items = reader.full_split(split)
        except DatasetError as err:
            broken(err)
            continue
        report.counts[split] = len(split_items)
        present = {it.label for it in split_items}
        empty = [label for label in range(len(classnames)) if label not in present]
        if empty:
            report.status = 'broken'
            report.problems.append(Problem(
                'broken', f'{len(empty)} class(es) have no {split} images, e.g. {classnames[empty[0]]!r}',
                str(reader.source_path)))
        items.extend((split, it) for it in split_items)
    _check_files(reader, items, report, check_images, progress, workers)
    return report


def _check_files(reader: BenchmarkDataset, items: Sequence[tuple[str, Datum]], report: DatasetReport,
                 check_images: bool, progress: bool, workers: int | None) -> None:
    hint = reader.image_hint()
    desc = f'{reader.name}: ' + ('decoding' if check_images else 'checking')
    bad: dict[str, list[str]] = {}
    unreadable: list[tuple[str, str]] = []
    paths = [it.impath for _, it in items]
    # A bar for the existence check only where it takes a while (ImageNet's 1.3M files).
    exists = [image_exists(p) for p in tqdm(paths, desc=desc + ' files', unit='img', leave=False,
                                             disable=not progress or check_images or len(paths) < 50_000)]
    for (split, it), ok in zip(items, exists, strict=True):
        if not ok:
            bad.setdefault(split, []).append(it.impath)
    if check_images:
        todo = [p for p, ok in zip(paths, exists, strict=True) if ok]
        unreadable = unreadable_images(todo, full=True, workers=workers, progress=progress, desc=desc)
    for split, missing in bad.items():
        report.status = 'broken'
        more = f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''
        report.problems.append(Problem('broken', f'{len(missing)} listed {split} image(s) missing, first{more}',
                                       missing[0], hint))
    for path, err in unreadable[:_EXAMPLES]:
        report.status = 'broken'
        report.problems.append(Problem('broken', f'unreadable image ({err})', path, hint))
    if len(unreadable) > _EXAMPLES:
        report.problems.append(Problem('broken', f'... {len(unreadable) - _EXAMPLES} more unreadable images'))


def _fmt_count(found: int | None, published: int | None) -> str:
    if found is None:
        return '-'
    if published is None:
        return f'{found:,}'
    return f'{found:,}/{published:,}' + ('' if found == published else '*')


def format_reports(reports: Iterable[DatasetReport], data_root: str | os.PathLike[str] | None = None,
                   check_images: bool = False, strict: bool = False) -> str:
    """A table of the reports, each problem under its dataset with the path and where to get it."""
    reports = list(reports)
    lines = []
    mode = 'decoded every image' if check_images else 'checked that files exist; --check-images decodes them'
    if data_root is not None:
        lines += [f'Data root: {printable(os.fspath(data_root))}  ({mode})', '']
    width = max([len(r.name) for r in reports] + [7]) + 2
    lines.append(f'{"dataset":<{width}}{"status":<9}{"classes":<14}images found/published')
    for r in reports:
        classes = _fmt_count(r.num_classes, r.published.get('classes'))
        splits = '  '.join(f'{s} {_fmt_count(n, r.published.get(s))}' for s, n in r.counts.items()) or '-'
        status = r.status if r.ok(strict) or r.status != 'found' else 'counts'
        lines.append(f'{r.name:<{width}}{status:<9}{classes:<14}{splits}')
        for p in r.problems:
            text = ': '.join(x for x in (p.message, p.path) if x)
            lines.append(f'    {p.kind}: {printable(text)}')
            if p.hint:
                lines.append(f'      where to get it: {p.hint}')
        if r.knowledge is not None:
            lines.append(f'    descriptions: {printable(r.knowledge.summary())}')
        elif r.knowledge_error:
            lines.append(f'    descriptions: unusable: {printable(r.knowledge_error)}')
    tally = {s: sum(r.status == s for r in reports) for s in ('found', 'broken', 'missing')}
    lines += ['', ', '.join(f'{n} {s}' for s, n in tally.items()) + '.']
    if any(r.count_mismatch for r in reports if r.status == 'found'):
        lines.append('* differs from the published count' + (' (fails with --strict)' if not strict else ''))
    bad = [r.name for r in reports if not r.ok(strict)]
    lines.append(f'Incomplete: {", ".join(bad)}' if bad else 'All requested datasets are complete.')
    return '\n'.join(lines)
