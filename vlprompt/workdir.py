"""A lock on a work dir, so that two processes never write into the same run folder at once.

The lock is ``fcntl.flock`` on ``<work_dir>/.vlprompt.lock``, which also records the holder's pid,
host and start time for the error the second process gets. The kernel drops a flock when the last
process sharing its open file description ends, so a lock file left by a killed process is taken
over (with a note naming the old pid) instead of blocking for ever.

A child that writes into a folder its parent holds (a sweep runs each run's ``tools/train.py`` so)
must keep the folder locked for as long as it writes, even when the parent dies first (``kill -9``
on a sweep): otherwise a rerun finds a stale lock and starts a second trainer in the same folder.

* The holder hands its locked descriptor to the child (``Popen(..., pass_fds=held_lock_fds())``, as
  :func:`vlprompt.runs.run_logged` does) and names it in :data:`HELD_ENV`. The child checks
  that the descriptor is that lock file and holds the lock, and keeps it while it writes: the
  kernel keeps the folder locked until the parent *and* the child have let go, whatever kills either.
* The child records its pid (and start time, against pid reuse) in the lock file, so that a refusal
  names the process that writes; a lock file naming a live child is never taken over, which also
  covers a child given the lock through the environment only (no descriptor).

The child is not made to die with its parent (``PR_SET_PDEATHSIG``): that is Linux-only, fires when
the *thread* that started the child ends rather than the process, needs a ``preexec_fn`` (unsafe in
a threaded parent), and throws away the epoch a trainer is in. A kept lock works wherever flock
does, and a rerun after the orphan ends resumes from its checkpoints.

Only the standard library is used here: the lock is taken before anything heavy is built.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

LOCK_FILE = ".vlprompt.lock"
HELD_ENV = "VLPROMPT_HELD_WORK_DIR_LOCKS"
"""``os.pathsep``-separated ``<pid>,<fd>=<lock path>`` entries (``<pid>=<lock path>`` where the file system
cannot lock): locks held by this process or a parent, and the descriptor a child is given it by."""

_HELD: dict[str, tuple[int, int]] = {}
"""Resolved lock path -> (pid, descriptor): the locks a process holds inside a ``with`` block (its own, or
handed down by its parent), and the descriptor it holds each by. A forked process inherits the table
with the descriptors, under its parent's pid."""


class WorkDirLocked(UserError, RuntimeError):
    """Another live process holds the work dir's lock."""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs on this host (a zombie, ended but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _start_time(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot, from ``/proc``), or ``None`` where that is unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _live_children(holder: dict) -> list[int]:
    """The pids of the children recorded in ``holder`` that still run (on this host: others cannot be asked)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("children"), list):
        return []
    live = []
    for child in holder["children"]:
        pid = child.get("pid") if isinstance(child, dict) else None
        if isinstance(pid, int) and _alive(pid) and child.get("start") in (None, _start_time(pid)):
            live.append(pid)
    return live


def held_lock_fds() -> tuple[int, ...]:
    """The descriptors of the work-dir locks this process holds. Give them to a child that writes into those
    folders (``subprocess.Popen(..., pass_fds=held_lock_fds())``): it then keeps the lock if this process dies."""
    return tuple(sorted({fd for _, fd in _HELD.values()}))


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


def _describe_busy(holder: dict) -> str:
    """:func:`_describe`, naming the live child that writes when the holder itself has died."""
    pid, host, children = holder.get("pid"), holder.get("host", "?"), _live_children(holder)
    dead = host == socket.gethostname() and isinstance(pid, int) and not _alive(pid)
    if children:
        since = f"; locked since {holder['since']}" if holder.get("since") else ""
        return f"pid {children[-1]} on {host} (started by pid {pid}{', no longer running' if dead else ''}{since})"
    return _describe(holder) + (" (no longer running; a process it started holds the lock)" if dead else "")


def _refusal(work_dir: Path, lock: Path, holder: dict) -> WorkDirLocked:
    return WorkDirLocked(f"{work_dir} is in use: {_describe_busy(holder)} is writing into it (lock file {lock}); "
                         "wait for it to finish or use another work dir")


def _held_by_ancestors() -> dict[str, tuple[int, int | None]]:
    """Lock path -> (holder pid, descriptor it handed down or ``None``), from :data:`HELD_ENV`."""
    held = {}
    for entry in filter(None, os.environ.get(HELD_ENV, "").split(os.pathsep)):
        owner, _, path = entry.partition("=")
        pid, _, fd = owner.partition(",")
        if pid.isdigit() and path and (fd.isdigit() or not fd):
            held[path] = (int(pid), int(fd) if fd else None)
    return held


def _holds(fd: int, lock: Path) -> bool:
    """Whether descriptor ``fd`` (inherited) is ``lock``'s file and holds its flock."""
    try:
        mine, theirs = os.fstat(fd), os.stat(lock)
        if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the same open file description: already ours
    except OSError:
        return False
    return True


def _write_holder(lock: Path, holder: dict, fd: int | None = None) -> None:
    """Rewrite the lock file's record in place (never empty meanwhile: a reader retries a torn one)."""
    data = json.dumps(holder).encode()
    try:
        own = fd is None
        fd = os.open(lock, os.O_RDWR) if own else fd
    except FileNotFoundError:
        return
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        if own:
            os.close(fd)


def _set_child(lock: Path, fd: int | None, add: bool) -> None:
    """Record this process as a child writing under the lock (``add``), or remove that record."""
    holder = _read_holder(lock)
    if not holder:
        return
    me = os.getpid()
    children = [c for c in holder.get("children") or [] if isinstance(c, dict) and c.get("pid") != me]
    if add:
        children.append({"pid": me, "start": _start_time(me)})
    _write_holder(lock, {**holder, "children": children}, fd)


@contextmanager
def _as_child(lock: Path, key: str, parent: int, fd: int | None) -> Iterator[None]:
    """Run under the lock ``parent`` holds: by its descriptor ``fd`` when given (the kernel then keeps the
    lock while this process lives), recorded in the lock file in both cases."""
    if fd is not None:
        os.set_inheritable(fd, False)  # handed on only on purpose (held_lock_fds), never to any program we run
        _HELD[key] = (os.getpid(), fd)
    _set_child(lock, fd, add=True)
    try:
        yield
    finally:
        _set_child(lock, fd, add=False)
        if fd is not None:
            _HELD.pop(key, None)
            if not _alive(parent) and not _live_children(_read_holder(lock)):  # the last holder: remove the file
                try:
                    if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                        lock.unlink()  # while still locked, as the holder does
                except FileNotFoundError:
                    pass
            os.close(fd)


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
            raise _refusal(work_dir, lock, holder) from None
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                print(f"warning: cannot lock {work_dir} ({err.strerror}); nothing keeps a second process from "
                      "writing into it at the same time", file=sys.stderr)
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
    if _live_children(previous):  # its holder died, but a child it started still writes there
        os.close(fd)
        raise _refusal(work_dir, lock, previous)
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

    Raises :class:`WorkDirLocked`, naming the folder and the pid that writes there, when another live
    process (or a live child of a dead one) holds it. Under a distributed ``launcher`` only global rank 0
    takes it. A child of the holder (the lock is named in :data:`HELD_ENV`) runs under its parent's lock,
    keeping it by the descriptor its parent handed down (:func:`held_lock_fds`) where there is one.
    """
    work_dir = Path(path)
    if global_rank(launcher) != 0:
        yield work_dir
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    lock = work_dir / LOCK_FILE
    key = str(lock.resolve())
    holder_pid, handed = _held_by_ancestors().get(key, (None, None))
    if _HELD.get(key, (None,))[0] == os.getpid():
        yield work_dir  # this process holds it already (a nested block)
        return
    if holder_pid is not None and handed is not None and _holds(handed, lock):
        with _as_child(lock, key, holder_pid, handed):
            yield work_dir
        return
    if holder_pid is not None and _read_holder(lock).get("pid") == holder_pid and _alive(holder_pid):
        with _as_child(lock, key, holder_pid, None):  # a parent holds it; it did not hand us its descriptor
            yield work_dir
        return
    fd = _acquire(lock, work_dir)
    before = os.environ.get(HELD_ENV)
    entry = f"{os.getpid()}={key}" if fd is None else f"{os.getpid()},{fd}={key}"
    os.environ[HELD_ENV] = os.pathsep.join(filter(None, [before, entry]))
    if fd is not None:
        _HELD[key] = (os.getpid(), fd)
    try:
        yield work_dir
    finally:
        if before is None:
            os.environ.pop(HELD_ENV, None)
        else:
            os.environ[HELD_ENV] = before
        if fd is not None:
            _HELD.pop(key, None)
            try:  # a child still writing there keeps the file (and, by our descriptor, the lock)
                if os.fstat(fd).st_ino == os.stat(lock).st_ino and not _live_children(_read_holder(lock)):
                    lock.unlink()  # while still locked: a waiter re-checks the inode after locking
            except FileNotFoundError:
                pass
            os.close(fd)


# ------------------------------------------------------------- what a work dir holds
_STEP = re.compile(r"(?:epoch|iter)_(\d+)\.pth$")


def step_checkpoints(work_dir: str | os.PathLike) -> list[Path]:
    """The ``epoch_N.pth`` / ``iter_N.pth`` files of ``work_dir``, newest (highest N) first."""
    found = (p for p in Path(work_dir).glob("*.pth") if _STEP.search(p.name))
    return sorted(found, key=lambda p: int(_STEP.search(p.name)[1]), reverse=True)


RUN_RECORD = "run.json"
"""Written when training starts in a work dir and again when it ends: which run the folder holds, with
what settings, and whether it finished."""
RUN_OUTPUTS = ("learned.safetensors", "results.json", "last_checkpoint", "sweep_result.json", RUN_RECORD)
"""Files a run writes into its work dir, besides ``epoch_N.pth`` / ``iter_N.pth`` and ``test_*.json``."""


def run_outputs(work_dir: str | os.PathLike) -> list[Path]:
    """The files of ``work_dir`` that a run wrote (checkpoints, learned prompts, results, records)."""
    work_dir = Path(work_dir)
    named = [work_dir / name for name in RUN_OUTPUTS if (work_dir / name).is_file()]
    return [*named, *sorted(step_checkpoints(work_dir)), *sorted(work_dir.glob("test_*.json"))]


def read_run_record(work_dir: str | os.PathLike) -> dict | None:
    """The work dir's :data:`RUN_RECORD`, ``None`` when it has none (or an unreadable one)."""
    path = Path(work_dir) / RUN_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
