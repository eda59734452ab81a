"""One atomic, durable file write for every results, state and report writer, and one config hash.

A file written here is never seen half-written, and once the call returns it survives a crash:
the content goes to a temporary file in the same folder, which is flushed and synced, renamed over
the target with ``os.replace`` and the folder synced; on any failure the temporary file is removed
and the target is left as it was. Two processes writing the same file at once never mix their
content (the temporary names differ); the last rename wins.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_output", "atomic_write", "atomic_write_json", "atomic_write_text", "config_hash",
           "durable_replace", "file_digest", "fsync_path"]


def fsync_path(path: str | os.PathLike, directory: bool = False) -> None:
    """Sync a file (or, with ``directory``, a folder's entries) to disk; folders that cannot be
    opened for syncing (some file systems) are passed over."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Sync ``src``, rename it over ``dst`` and sync ``dst``'s folder."""
    fsync_path(src)
    os.replace(src, dst)
    fsync_path(Path(dst).parent, directory=True)


def _temporary_name(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{suffix}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path`` to write to; on leaving, move it durably into place.

    ``suffix`` ends the temporary name (``".png"`` for writers that infer the format from it).
    The folder is created. If the block raises, the temporary file is removed and ``path`` is
    untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path, suffix)
    try:
        yield tmp
        durable_replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Path], Any], suffix: str = "") -> Path:
    """Write ``data`` (text, bytes, or a function that writes the file at the path it is given)
    to ``path`` atomically and durably; return ``path``."""
    path = Path(path)
    with atomic_output(path, suffix) as tmp:
        if callable(data):
            data(tmp)
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and durably; return ``path``."""
    return atomic_write(path, text)


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> Path:
    """Write ``json.dumps(obj, **dumps_kwargs)`` to ``path`` atomically and durably; return ``path``."""
    return atomic_write(path, json.dumps(obj, **dumps_kwargs))


def config_hash(config: Any, *, length: int = 64, compact: bool = True) -> str:
    """SHA-256 (the first ``length`` hex digits) of ``config`` as canonical JSON: sorted keys, no
    spaces (``compact=False``: ``json.dumps``'s default ``", "`` and ``": "``), values JSON cannot hold
    written as ``str``.

    Sweeps name a run's config by its full compact hash; meta-training states and the pair-feature
    cache use 16 digits of the spaced form (kept so that their existing files still match).
    """
    separators = (",", ":") if compact else None
    text = json.dumps(config, sort_keys=True, separators=separators, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


_digests: dict[tuple[str, int, int, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, remembered per (path, device, inode, size, mtime in ns) so that a
    file read by many runs of one sweep is hashed once; any rewrite changes the size or the
    nanosecond mtime and is hashed again (an edit that keeps both, such as ``touch -d`` back to the
    old stamp after a same-size write, is the one case this shortcut trusts)."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = (real, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    digest = _digests.get(key)
    if digest is None:
        sha = hashlib.sha256()
        with open(real, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
        digest = _digests[key] = sha.hexdigest()
    return digest
