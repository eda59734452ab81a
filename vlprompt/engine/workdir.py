"""A lock on a work dir, so that two processes never train into the same run folder at once.

The lock is ``fcntl.flock`` on ``<work_dir>/.vlprompt.lock``, which also records the holder's pid,
host and start time for the error the second process gets. The kernel drops a flock when its
process dies, so a lock file left by a killed process is taken over (with a note naming the old
pid) instead of blocking for ever. Children of the holder (a sweep running ``tools/train.py``)
inherit the lock through an environment variable and do not take it again.

Only the standard library is used here: the lock is taken before anything heavy is built.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError

LOCK_FILE = ".vlprompt.lock"
HELD_ENV = "VLPROMPT_HELD_WORK_DIR_LOCKS"
"""``os.pathsep``-separated ``<pid>=<lock path>`` entries: locks held by this process or a parent."""


class WorkDirLocked(UserError, RuntimeError):
    """Another live process holds the work dir's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_holder(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError:
        return {}
    try:
        holder = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "a process that has not written its pid yet"
    since = f", since {holder['since']}" if holder.get("since") else ""
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}{since}"


def _held_by_ancestors() -> dict[str, int]:
    held = {}
    for entry in filter(None, os.environ.get(HELD_ENV, "").split(os.pathsep)):
        pid, _, path = entry.partition("=")
        if pid.isdigit() and path:
            held[path] = int(pid)
    return held


def global_rank(launcher: str = "none") -> int:
    """This process's rank under ``launcher`` (``none``: 0), read from the launcher's environment."""
    if launcher == "none":
        return 0
    value = os.environ.get("RANK") if launcher == "pytorch" else os.environ.get("SLURM_PROCID")
    return int(value or 0)


def _acquire(lock: Path, work_dir: Path) -> int | None:
    """An open, flocked descriptor on ``lock`` (``None`` where the file system cannot lock)."""
    for _ in range(100):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_holder(lock)
            for _ in range(10):  # the holder may be between taking the lock and writing its pid
                if holder:
                    break
                time.sleep(0.05)
                holder = _read_holder(lock)
            raise WorkDirLocked(f"{work_dir} is in use: {_describe(holder)} is training into it (lock file {lock}); "
                                "wait for it to finish or use another work dir") from None
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                print(f"warning: cannot lock {work_dir} ({err.strerror}); nothing keeps a second process from "
                      "training into it at the same time", file=sys.stderr)
                return None
            raise
        try:
            same_file = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)  # the holder removed the file between our open and our lock: try the new one
    else:
        raise WorkDirLocked(f"{work_dir}: could not take the lock {lock} (it keeps being replaced)")
    previous = _read_holder(lock)
    if previous:  # its process died without removing the file; the kernel has dropped its lock
        pid, host = previous.get("pid"), previous.get("host")
        why = ("is no longer running" if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid)
               else "no longer holds it")
        print(f"{work_dir}: taking over the stale lock of {_describe(previous)}, which {why}", file=sys.stderr)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
    return fd


@contextmanager
def work_dir_lock(path: str | os.PathLike, *, launcher: str = "none") -> Iterator[Path]:
    """Hold the lock on work dir ``path`` (created if missing) for the ``with`` block.

    Raises :class:`WorkDirLocked`, naming the folder and the holder's pid, when another live
    process holds it. Under a distributed ``launcher`` only global rank 0 takes it; a child of the
    holder (the lock is named in ``$VLPROMPT_HELD_WORK_DIR_LOCKS``) runs under its parent's lock.
    """
    work_dir = Path(path)
    if global_rank(launcher) != 0:
        yield work_dir
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    lock = work_dir / LOCK_FILE
    key = str(lock.resolve())
    holder_pid = _held_by_ancestors().get(key)
    if holder_pid is not None and _read_holder(lock).get("pid") == holder_pid and _alive(holder_pid):
        yield work_dir  # a parent (or this process) holds it for us
        return
    fd = _acquire(lock, work_dir)
    before = os.environ.get(HELD_ENV)
    os.environ[HELD_ENV] = os.pathsep.join(filter(None, [before, f"{os.getpid()}={key}"]))
    try:
        yield work_dir
    finally:
        if before is None:
            os.environ.pop(HELD_ENV, None)
        else:
            os.environ[HELD_ENV] = before
        if fd is not None:
            try:
                if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                    lock.unlink()  # while still locked: a waiter re-checks the inode after locking
            except FileNotFoundError:
                pass
            os.close(fd)
