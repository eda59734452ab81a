"""Folder and file helpers the benchmark readers share: image and class folders, ImageNet class names."""

from __future__ import annotations

import os

from .loading import IMG_EXTENSIONS

__all__ = ['list_class_folders', 'list_images', 'read_wnid_classnames']


def list_images(folder: str | os.PathLike[str]) -> list[str]:
    """Image files (by extension) directly in ``folder``, hidden files skipped, sorted by name."""
    with os.scandir(folder) as it:
        names = [e.name for e in it if not e.name.startswith('.') and e.is_file()
                 and os.path.splitext(e.name)[1].lower() in IMG_EXTENSIONS]
    return sorted(names)


def list_class_folders(folder: str | os.PathLike[str]) -> list[str]:
    """Sub-folder names of ``folder`` (hidden ones skipped), sorted."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if not e.name.startswith('.') and e.is_dir())


def read_wnid_classnames(path: str | os.PathLike[str]) -> dict[str, str]:
    """ImageNet's ``classnames.txt`` (``n01440764 tench`` per line) as an ordered wnid -> name dict."""
    names: dict[str, str] = {}
    with open(path, encoding='utf-8') as f:
        for line in f:
            parts = line.strip().split(' ')
            if parts and parts[0]:
                names[parts[0]] = ' '.join(parts[1:])
    return names
