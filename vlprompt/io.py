"""One atomic, durable file write for every results, state and report writer, and one config hash.

A file written here is never seen half-written, and once the call returns it survives a crash:
the content goes to a temporary file in the same folder, which is flushed and synced, renamed over
the target with ``os.replace`` and the folder synced; on any failure the temporary file is removed
and the target is left as it was. Two processes writing the same file at once never mix their
content (the temporary names differ); the last rename wins. A writer killed before its rename
(``kill -9``, a lost node) cannot clean up: the next write of the same file removes the temporary
files of writers that are no longer running (their pid, and host, are in the name).

A full disk or quota (``ENOSPC``, ``EDQUOT``) while writing raises :class:`DiskFullError`: one line
naming the file and the space left on its file system, which the tools print without a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = ["CACHE_ENV", "DISK_FULL_ERRNOS", "DiskFullError", "atomic_output", "atomic_write", "atomic_write_json",
           "atomic_write_text", "cache_root", "config_differences", "config_hash", "disk_full_names", "durable_replace",
           "file_digest", "flatten_config", "fsync_path", "remove_stale_temporaries", "show_value", "space_left"]

CACHE_ENV = "VLPROMPT_CACHE"
"""The environment variable naming vlprompt's cache folder."""


def cache_root() -> Path:
    """Root of vlprompt's own cache: ``$VLPROMPT_CACHE`` or ``~/.cache/vlprompt``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vlprompt").expanduser()


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
"""The errors of a write that found no room: no space left on the device, the user's quota exceeded."""


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def space_left(path: str | os.PathLike) -> str:
    """The free space (``1.5 GiB``) of the file system that holds ``path`` (or its nearest existing folder)."""
    where = Path(os.path.abspath(path))
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        return _size(shutil.disk_usage(where).free)
    except OSError:
        return "an unknown amount of space"


class DiskFullError(UserError, OSError):
    """A write found no room (``ENOSPC``, ``EDQUOT``): the message names the file and the space left where it
    goes, and what to do next (``then``); ``errno`` is the original's, so ``except OSError`` still catches it."""

    def __init__(self, path: str | os.PathLike, code: int = errno.ENOSPC, then: str = "free some space and rerun"
                 ) -> None:
        super().__init__(f"{os.strerror(code)} while writing {path} ({space_left(path)} free there); {then}")
        self.errno = code
        self.path = Path(path)


@contextlib.contextmanager
def disk_full_names(path: str | os.PathLike) -> Iterator[None]:
    """Turn a full disk or quota (an ``OSError`` with an errno of :data:`DISK_FULL_ERRNOS`) inside the block into
    :class:`DiskFullError` naming ``path``, the file being written; other errors pass as they are."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as err:
        if err.errno in DISK_FULL_ERRNOS:
            raise DiskFullError(path, err.errno) from err
        raise


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


_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
"""This machine, in the temporary names (a shared file system may hold other hosts' writers' files)."""


def _temporary_name(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}-{_HOST}.tmp{suffix}")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of ``path`` (``.<name>.<pid>-<id>[-<host>].tmp*``) whose writer, a process of
    this host, is no longer running: what a write killed before its rename leaves. Returns what was removed.

    A live writer's file and another host's are kept (names without a host, from before hosts were named,
    count as this host's)."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)-[0-9a-f]{{8}}(?:-([0-9a-f]{{8}}))?\.tmp")
    removed = []
    for entry in glob.glob(os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.*.tmp*")):
        found = pattern.match(os.path.basename(entry))
        if not found or (found[2] and found[2] != _HOST) or _running(int(found[1])):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry)
            removed.append(Path(entry))
    return removed


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path`` to write to; on leaving, move it durably into place.

    ``suffix`` ends the temporary name (``".png"`` for writers that infer the format from it).
    The folder is created. If the block raises, the temporary file is removed and ``path`` is
    untouched; a full disk raises :class:`DiskFullError` naming ``path``. Temporary files of
    ``path`` that killed writers left are removed first (:func:`remove_stale_temporaries`).
    """
    path = Path(path)
    with disk_full_names(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _temporary_name(path, suffix)
    try:
        with disk_full_names(path):
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


# ------------------------------------------------------------- comparing configs
def flatten_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted key: leaf value}`` of a nested dict (an empty dict is a leaf)."""
    if not isinstance(config, dict) or (prefix and not config):
        return {prefix: config}
    out = {}
    for key, value in config.items():
        out.update(flatten_config(value, f"{prefix}.{key}" if prefix else key))
    return out


_UNSET = object()


def config_differences(recorded: Mapping, wanted: Mapping) -> list[tuple[str, Any, Any]]:
    """``(dotted key, recorded value, wanted value)`` for every leaf that differs (missing: ``<unset>``)."""
    old, new = flatten_config(dict(recorded)), flatten_config(dict(wanted))
    diffs = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key, _UNSET), new.get(key, _UNSET)
        if a != b:
            diffs.append((key, "<unset>" if a is _UNSET else a, "<unset>" if b is _UNSET else b))
    return diffs


def show_value(value: Any) -> str:
    """A recorded value as JSON, for messages naming two configs (``<unset>`` as it is)."""
    return value if value == "<unset>" else json.dumps(value)
