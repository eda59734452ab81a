"""Your own images as a dataset: the names they go by (standard library only).

A dataset of your files is named ``folder:PATH`` wherever a dataset name goes (``--dataset``, ``--datasets``,
``build_dataset``); ``PATH`` is a folder of class folders (optionally below ``train/``, ``val/``, ``test/``), a
CSV or JSONL list of ``path,label`` rows, or a CoOp ``split_zhou_*.json`` file. Options follow a ``?`` as
``key=value`` pairs joined by ``&``::

    folder:/data/photos
    folder:/data/photos?names=/data/names.txt&descriptions=/data/descriptions.json
    folder:/data/list.csv?split_file=/shared/photos_split.json&split_seed=2&train=0.6&val=0.2

A path with a ``/`` that exists may be given without ``folder:``. The first use registers the dataset under
one short name, ``folder-<folder name>`` (``folder-photos``; ``-2``, ``-3``... when another folder or other
options already have it), in ``<cache>/user_datasets.json``; every tool and process then knows it by that
name (run folders, table rows, composed config paths such as ``configs/coop/folder_photos.py``), and the
name can be typed instead of the path. The reader is :class:`vlprompt.datasets.user.UserDataset`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UserError
from .io import atomic_write_json, cache_root

__all__ = ["USER_DATASETS_FILE", "USER_DATASET_OPTIONS", "USER_DATASET_PREFIX", "UserDatasetError",
           "parse_user_dataset", "register_user_dataset", "registry_path", "user_dataset", "user_datasets"]

USER_DATASET_PREFIX = "folder:"
USER_DATASETS_FILE = "user_datasets.json"
USER_DATASET_OPTIONS = {
    "names": "a class-names file: .json {folder or label: name} or [names by label]; .txt one name per line "
             "(label order) or 'key<TAB>name' lines",
    "descriptions": "class descriptions for KAPT and described prompts (the formats vlprompt's knowledge files use)",
    "split_file": "where the split file is read from, or written on first use (default: in the cache)",
    "split_seed": "seed of the split made when train/val/test are not given (default 1)",
    "train": "fraction of each class's images in train when no split is given (default 0.5, as CoOp's readers)",
    "val": "fraction in val (default 0.2; the rest is test)",
}
"""The options of ``folder:PATH?key=value``, with what each means."""
_PATH_OPTIONS = ("names", "descriptions", "split_file")


class UserDatasetError(UserError, KeyError):
    """A ``folder:`` dataset that cannot be: no such path, an unknown option, a bad value."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _looks_like_path(name: str) -> bool:
    return ("/" in name or name.startswith((".", "~"))) and os.path.exists(os.path.expanduser(name.split("?")[0]))


def parse_user_dataset(name: str) -> dict[str, Any] | None:
    """``name`` as a user dataset's spec (``{"path": absolute path, option: value...}``), or ``None`` when it is
    not ``folder:PATH`` nor an existing path. A missing path, an unknown option or a bad value is a
    :class:`UserDatasetError` naming it."""
    if name.startswith(USER_DATASET_PREFIX):
        text = name[len(USER_DATASET_PREFIX):]
    elif _looks_like_path(name):
        text = name
    else:
        return None
    raw_path, _, query = text.partition("?")
    if not raw_path:
        raise UserDatasetError(f"{name}: give the folder or list file after {USER_DATASET_PREFIX!r} "
                               f"({USER_DATASET_PREFIX}/path/to/images)")
    path = os.path.abspath(os.path.expanduser(raw_path))
    if not os.path.exists(path):
        raise UserDatasetError(f"{name}: no such folder or list file: {path}")
    spec: dict[str, Any] = {"path": path}
    for pair in filter(None, query.split("&")):
        key, sep, value = pair.partition("=")
        if key not in USER_DATASET_OPTIONS or not sep:
            raise UserDatasetError(f"{name}: unknown option {pair!r}; options (key=value, joined by &): "
                                   + "; ".join(f"{k}: {v}" for k, v in USER_DATASET_OPTIONS.items()))
        spec[key] = _option_value(name, key, value)
    if spec.get("train", 0.5) + spec.get("val", 0.2) >= 1:
        raise UserDatasetError(f"{name}: train={spec.get('train', 0.5)} and val={spec.get('val', 0.2)} leave no "
                               "images for test; their sum must be below 1")
    return spec


def _option_value(name: str, key: str, value: str) -> Any:
    if key in _PATH_OPTIONS:
        path = os.path.abspath(os.path.expanduser(value))
        if key != "split_file" and not os.path.isfile(path):
            raise UserDatasetError(f"{name}: {key}={value}: no such file ({path})")
        return path
    if key == "split_seed":
        if not re.fullmatch(r"-?\d+", value):
            raise UserDatasetError(f"{name}: split_seed={value!r} is not a whole number")
        return int(value)
    try:
        fraction = float(value)
    except ValueError:
        fraction = -1.0
    if not 0 < fraction < 1:
        raise UserDatasetError(f"{name}: {key}={value!r} is not a fraction between 0 and 1")
    return fraction


def registry_path() -> Path:
    """The file that maps user datasets' names to their specs: ``<cache>/user_datasets.json``."""
    return cache_root() / USER_DATASETS_FILE


def user_datasets() -> dict[str, dict[str, Any]]:
    """Every registered user dataset: name -> spec (empty when none is, or the file is unreadable)."""
    try:
        data = json.loads(registry_path().read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("path"), str)}


def user_dataset(name: str) -> dict[str, Any] | None:
    """The spec of the user dataset registered as ``name``, or ``None``."""
    return user_datasets().get(name)


@contextlib.contextmanager
def _registry_lock() -> Iterator[None]:
    path = registry_path().with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def register_user_dataset(spec: dict[str, Any], taken: tuple[str, ...] = ()) -> str:
    """The one name of the user dataset ``spec``: the name it was registered under, else a new
    ``folder-<stem>`` (``-2``, ``-3``... past names in use and ``taken``), recorded in :func:`registry_path`."""
    with _registry_lock():
        registry = user_datasets()
        for name, known in registry.items():
            if known == spec:
                return name
        slug = re.sub(r"[^a-z0-9]+", "-", Path(spec["path"]).stem.lower()).strip("-") or "images"
        name, n = f"folder-{slug}", 2
        while name in registry or name in taken:
            name, n = f"folder-{slug}-{n}", n + 1
        registry[name] = spec
        atomic_write_json(registry_path(), registry, indent=1, sort_keys=True)
    return name
