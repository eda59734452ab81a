"""Readers of CoOp-style split files, and the generic reader the toy world uses.

A split file is JSON ``{"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}``
with ``relpath`` relative to the dataset's image folder. The class names are the split file's own
(CoOp already cleaned them when it wrote the files: underscores, the year in front for cars, ...).
Dassl rebuilds a missing split file with an unseeded shuffle; vlprompt refuses instead, since
numbers on another split are not comparable with the published ones.

:class:`SplitFolderDataset` reads any folder laid out as::

    <data root>/<name>/
    ├── images/                 # the paths of the split file are relative to this folder
    └── split_<name>.json       # test-only datasets have empty "train" and "val" lists

``build_dataset('split-folder', folder='<name>', data_root=...)``. The toy world's datasets are
registered under their own names (``toy-shapes``, ...) through :func:`register_toy_datasets`; they
are generated on first use by ``vlprompt.datasets.toyworld.ensure_toy_dataset`` into the toy
world's cache, or under ``data_root`` when one is passed explicitly (``$VLPROMPT_DATA`` is not used
for them).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from ..registry import DATASETS
from .base import BenchmarkDataset, register_dataset
from .items import DatasetError, Datum

__all__ = ['SplitFileDataset', 'SplitFolderDataset', 'ToyDataset', 'register_toy_datasets', 'toyworld_module']

SPLIT_KEYS = ('train', 'val', 'test')


_ROW_EXAMPLES = 5


def _row_problem(row: Any) -> str | None:
    """What is wrong with one ``[relpath, label, classname]`` row of a split file, or ``None``.

    The label must be a JSON integer >= 0: ``3.7``, ``true`` or ``"3"`` are refused rather than
    cast, since a cast would silently put images in another class than the file's author meant.
    """
    if not isinstance(row, list) or len(row) != 3:
        return f'{row!r} is not [relpath, label, classname]'
    rel, label, classname = row
    if not isinstance(rel, str) or not rel:
        return f'relpath {rel!r} is not a file path (in {row!r})'
    if not isinstance(classname, str) or not classname.strip():
        return f'classname {classname!r} is not a class name (in {row!r})'
    if isinstance(label, bool) or not isinstance(label, int):
        return f'label {label!r} is not an integer (in {row!r})'
    if label < 0:
        return f'label {label} is negative (in {row!r})'
    return None


class SplitFileDataset(BenchmarkDataset):
    """A benchmark whose train/val/test lists come from one split JSON file."""

    split_file: ClassVar[str] = ''

    @property
    def split_path(self) -> Path:
        """Absolute path of the split file."""
        return self.dataset_path / self.split_file

    @property
    def source_path(self) -> Path:
        return self.split_path

    @functools.cached_property
    def split_lists(self) -> dict[str, list[Datum]]:
        """Items of every split, as listed in the split file."""
        path = self.split_path
        if not path.is_file():
            raise DatasetError(self.name, 'split file not found', path, self.files.get(self.split_file))
        try:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
        except (OSError, ValueError) as err:
            raise DatasetError(self.name, f'cannot parse split file ({err})', path) from err
        if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in SPLIT_KEYS):
            raise DatasetError(self.name, 'split file must map "train", "val" and "test" to lists', path)
        root = str(self.image_root)
        out: dict[str, list[Datum]] = {}
        problems: list[str] = []
        for key in SPLIT_KEYS:
            items = []
            seen: dict[str, int] = {}
            for i, row in enumerate(data[key]):
                problem = _row_problem(row)
                if problem is None:
                    rel, label, classname = row
                    first = seen.setdefault(os.path.normpath(rel), i)
                    if first != i:
                        problem = f'repeats the image {rel!r} of row {first}'
                    else:
                        items.append(Datum(os.path.join(root, rel), label, classname))
                if problem is not None:
                    problems.append(f'split {key!r} row {i}: {problem}')
            out[key] = items
        if problems:
            more = f'; and {len(problems) - _ROW_EXAMPLES} more' if len(problems) > _ROW_EXAMPLES else ''
            raise DatasetError(self.name, f'{len(problems)} bad row(s) in the split file: '
                                          + '; '.join(problems[:_ROW_EXAMPLES]) + more, path)
        return out

    def read_split(self, split: str) -> list[Datum]:
        return self.split_lists[split]

    def read_classnames(self) -> list[str]:
        return self.classnames_from_items(self.split_lists, self.split_path)


class SplitFolderDataset(SplitFileDataset):
    """Any ``<data root>/<folder>/`` with ``images/`` and ``split_<folder>.json`` (CoOp format).

    Args:
        folder: Name of the dataset folder (also the split file's suffix and the dataset's name).
        data_root: Folder that holds it; see :class:`BenchmarkDataset` for the other arguments.
    """

    image_dir = 'images'

    def __init__(self, folder: str | None = None, data_root: str | os.PathLike[str] | None = None,
                 **kwargs: Any) -> None:
        self._set_folder(folder)
        super().__init__(data_root=data_root, **kwargs)

    def _set_folder(self, folder: str | None) -> None:
        if folder is not None:
            self.name = self.dataset_dir = folder
            self.split_file = f'split_{folder}.json'
        if not self.dataset_dir:
            raise ValueError(f'{type(self).__name__} needs folder=<dataset folder name>')
        self.files = {'images/': f'the images of {self.name}', self.split_file: f'the split file of {self.name}'}

    @classmethod
    def inspect(cls, data_root: str | os.PathLike[str] | None = None,
                folder: str | None = None) -> SplitFolderDataset:
        obj = cls.__new__(cls)
        obj._set_folder(folder)
        obj._open(data_root)
        return obj  # type: ignore[return-value]

    @property
    def is_test_only(self) -> bool:
        lists = self.split_lists
        return self.test_only or (not lists['train'] and not lists['val'])


register_dataset('split-folder')(SplitFolderDataset)


# ---------------------------------------------------------------------------- the toy world

_TOY_MODULES = ('vlprompt.datasets.toyworld', 'vlprompt.toyworld')


def toyworld_module() -> ModuleType | None:
    """The toy-world module that provides ``ensure_toy_dataset`` and ``TOY_DATASETS``, if present.

    Imported here, not at the top, so the readers work before (or without) the toy world.
    """
    for modname in _TOY_MODULES:
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as err:
            if err.name is not None and modname.startswith(err.name):
                continue  # the module itself is absent
            raise
        if hasattr(module, 'ensure_toy_dataset') and hasattr(module, 'TOY_DATASETS'):
            return module
    return None


class ToyDataset(SplitFolderDataset):
    """A dataset of the generated toy world, made on first use (a split-folder dataset)."""

    def __init__(self, data_root: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        super().__init__(None, data_root=data_root, **kwargs)

    @classmethod
    def inspect(cls, data_root: str | os.PathLike[str] | None = None,
                folder: str | None = None) -> SplitFolderDataset:
        return super().inspect(data_root, folder)

    def locate(self, data_root: str | os.PathLike[str] | None) -> Path:
        """Generate the dataset if needed (``ensure_toy_dataset``) and return its folder."""
        module = toyworld_module()
        if module is None:
            raise DatasetError(self.name, 'the toy world (vlprompt.datasets.toyworld) is not available')
        return Path(module.ensure_toy_dataset(self.name, root=data_root))


def register_toy_datasets() -> tuple[str, ...]:
    """Register every name of ``TOY_DATASETS`` as a :class:`ToyDataset`; returns the names registered.

    A toy world that fails to import only costs its own datasets (with a warning), never the readers
    of the real benchmarks.
    """
    try:
        module = toyworld_module()
    except Exception as err:  # noqa: BLE001 - see above
        warnings.warn(f'toy datasets not registered: the toy world failed to import ({err!r})', stacklevel=2)
        return ()
    if module is None:
        return ()
    names = []
    for name in module.TOY_DATASETS:
        if name in DATASETS.module_dict:
            continue
        cls_name = 'Toy' + ''.join(part.capitalize() for part in name.replace('_', '-').split('-') if part != 'toy')
        attrs: dict[str, Any] = {
            'dataset_dir': name, 'split_file': f'split_{name}.json', '__module__': __name__,
            '__doc__': f'The toy-world dataset {name!r} (generated on first use).'}
        if hasattr(module, 'toy_classnames'):
            attrs['num_classes'] = len(module.toy_classnames(name))
        cls = type(cls_name, (ToyDataset,), attrs)
        register_dataset(name)(cls)
        names.append(name)
    return tuple(names)
