"""What a run shows on the terminal while it works: a quiet console, progress bars, and the progress
file through which a sweep follows the run it started.

The terminal of ``tools/train.py`` and ``tools/test.py`` shows the run's header (config, work dir,
log file), a progress bar and the result line; everything mmengine logs (the environment, the
config, the hook table, deprecation notices, the per-iteration lines) goes to the log file only
(:mod:`vlprompt.engine.console`). ``--verbose`` or ``VLPROMPT_VERBOSE=1`` brings mmengine's full
console output back.

Progress bars go to stderr, only when it is a terminal (a log file or a pipe gets no carriage-return
updates); ``VLPROMPT_PROGRESS=1`` forces them on, ``0`` off.

A sweep (:func:`vlprompt.engine.sweep.run_logged`) sends the output of the run it starts to a log
file, so it cannot show that run's bar. It names a file in ``VLPROMPT_PROGRESS_FILE``; the run
writes its stage (``train``, ``test base``...), steps done and total, and its log file's path there
(atomically, at most every :data:`WRITE_INTERVAL` seconds), and the sweep, polling the file
(:func:`follow_process`), prints the log path and drives a bar of its own.

This module imports neither torch nor mmengine.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .io import atomic_write_json

VERBOSE_ENV = "VLPROMPT_VERBOSE"
"""Set to 1 for mmengine's full console output (environment, config, hook table, every log line)."""
PROGRESS_ENV = "VLPROMPT_PROGRESS"
"""1: progress bars even when stderr is not a terminal; 0: never; unset: on a terminal only."""
PROGRESS_FILE_ENV = "VLPROMPT_PROGRESS_FILE"
"""Where a run writes its progress for the process that started it (set by the sweeps)."""
WRITE_INTERVAL = 0.5
"""Seconds between two writes of the progress file (the first and last state of a stage are always written)."""
POLL_INTERVAL = 0.5
"""Seconds between two reads of the progress file by the sweep."""
BAR_INTERVAL = 0.5
"""tqdm's ``mininterval``: at most two redraws a second."""

_FALSE = ("", "0", "false", "no", "off")
_verbose_flag = False


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return value.strip().lower() not in _FALSE


def set_verbose(verbose: bool) -> None:
    """``--verbose`` of a tool: mmengine's full console output for the runs of this process."""
    global _verbose_flag
    _verbose_flag = bool(verbose)


def verbose() -> bool:
    """Whether the console shows everything mmengine logs (``--verbose`` or ``$VLPROMPT_VERBOSE``)."""
    return _verbose_flag or bool(_env_flag(VERBOSE_ENV))


def bar_disabled() -> bool | None:
    """tqdm's ``disable`` for a progress bar: ``None`` (tqdm turns it off when stderr is not a
    terminal) unless ``$VLPROMPT_PROGRESS`` forces it on or off."""
    forced = _env_flag(PROGRESS_ENV)
    return None if forced is None else not forced


def run_header(config: str | os.PathLike, work_dir: str | os.PathLike, log_file: str | os.PathLike | None) -> str:
    """The lines a run starts with on the terminal: its config, work dir and log file."""
    lines = [f"config:   {config}", f"work dir: {work_dir}"]
    if log_file:
        lines.append(f"log:      {log_file}")
    return "\n".join(lines)


def progress_file() -> Path | None:
    """The progress file this process was asked to write (``$VLPROMPT_PROGRESS_FILE``), if any."""
    path = os.environ.get(PROGRESS_FILE_ENV)
    return Path(path) if path else None


class ProgressWriter:
    """Writes a run's progress to :func:`progress_file`: the state of the current stage, at most
    every :data:`WRITE_INTERVAL` seconds unless ``force``. Does nothing when no file was asked for."""

    def __init__(self, path: str | os.PathLike | None = None, interval: float = WRITE_INTERVAL) -> None:
        self.path = Path(path) if path is not None else progress_file()
        self.interval = interval
        self._last = 0.0

    def write(self, state: Mapping[str, Any], force: bool = False) -> None:
        """Store ``state`` (``stage``, ``done``, ``total``, ``log``...) unless written less than
        ``interval`` seconds ago (``force``: always)."""
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        with contextlib.suppress(OSError):  # progress is a courtesy: never fail a run for it
            atomic_write_json(self.path, dict(state))


def read_progress(path: str | os.PathLike) -> dict | None:
    """The last state written to a progress file; ``None`` before the first write."""
    try:
        state = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def stage_label(state: Mapping[str, Any]) -> str:
    """``train epoch 3/10``, ``test base``: the bar's description for a progress state."""
    label = str(state.get("stage") or "run")
    if state.get("epochs"):
        label += f" epoch {state.get('epoch', 0)}/{state['epochs']}"
    return label


def follow_process(proc: subprocess.Popen, path: str | os.PathLike, *, poll: float = POLL_INTERVAL,
                   announce: Callable[[str], None] | None = None, desc: str = "") -> int:
    """Wait for ``proc`` while showing the progress it writes to ``path``; return its exit status.

    The first log file the run reports is announced (``log: <path>``, through ``announce``, by
    default ``tqdm.write``); a bar (stderr, :func:`bar_disabled`) follows its stage and steps. On
    Ctrl-C the process, which has the same signal, is given a few seconds to stop before it is killed.
    """
    from tqdm import tqdm

    announce = announce or tqdm.write
    logged = False
    stage = None
    bar = tqdm(total=None, desc=desc or "starting", unit="it", leave=False, dynamic_ncols=True,
               mininterval=BAR_INTERVAL, disable=bar_disabled())
    try:
        while True:
            try:
                code = proc.wait(timeout=poll)
            except subprocess.TimeoutExpired:
                code = None
            state = read_progress(path)
            if state is not None:
                if not logged and state.get("log"):
                    announce(f"log: {state['log']}")
                    logged = True
                bar.set_description(f"{desc}: {stage_label(state)}" if desc else stage_label(state), refresh=False)
                key = (state.get("stage"), state.get("total"), state.get("epochs"))
                if key != stage:
                    stage = key
                    bar.reset(total=state.get("total"))
                bar.update(int(state.get("done", 0)) - bar.n)
            if code is not None:
                bar.refresh()  # the last state, even when it came sooner than the bar redraws
                return code
    except BaseException:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)  # Ctrl-C reaches the run too: let it stop cleanly
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    finally:
        bar.close()

