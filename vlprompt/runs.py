"""A sweep's runs, one folder each: the result record that marks a run finished, the check of a folder
against the run a sweep asks for, and the one step that runs or reuses a run under its folder's lock.

Standard library only: a parallel sweep's job (:mod:`vlprompt.launch`) imports this module and not
torch, so a job starts its run's ``tools/train.py`` in a fraction of a second. What needs the config
system (resolving a run's effective config, :func:`vlprompt.engine.sweep.plan_runs`) happens before, in
the sweep's own process: every function here takes a *planned* :class:`SweepRun`, whose
:attr:`~SweepRun.config` is filled in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import hint_on_interrupt
from .io import atomic_write_text, config_differences, config_hash, show_value
from .progress import PROGRESS_FILE_ENV, follow_process
from .workdir import WorkDirLocked, held_lock_fds, read_run_record, run_outputs, work_dir_lock

REPO_ROOT = Path(__file__).resolve().parents[1]
SWEEP_RESUME_HINT = ("rerun the same command to go on: finished runs are reused and the interrupted one resumes "
                     "from its last checkpoint")
"""What a sweep interrupted by Ctrl-C tells the user."""
TRAIN_RESUME = "--resume"
"""The flag every sweep gives ``tools/train.py``: a rerun resumes the run a sweep left unfinished."""
SETTINGS_KEY = "run_settings"
"""Where a run's :attr:`SweepRun.settings` go in its recorded config."""
RESULT_FILE = "sweep_result.json"
"""Written last in a run's folder, atomically: its presence means the run finished."""

def run_logged(cmd: list[str], log: Path, cwd: Path = REPO_ROOT) -> None:
    """Run ``cmd`` with its output appended to ``log``; a failure names the command and the log.

    The run reports its progress through a file (:mod:`vlprompt.progress`): its log file's path is
    printed when it starts and a bar follows its epochs and steps, below the sweep's bar of runs. The run
    is handed the work-dir locks this process holds (:func:`~vlprompt.workdir.held_lock_fds`): it
    keeps its run folder locked while it writes there, even if the sweep is killed first."""
    log.parent.mkdir(parents=True, exist_ok=True)
    gpus = int(os.environ.get("VLPROMPT_GPUS_PER_RUN") or 1)  # a parallel sweep's run with several GPUs
    if gpus > 1 and len(cmd) > 1 and Path(cmd[1]).name == "train.py":
        cmd = [cmd[0], "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", *cmd[1:],
               "--launcher", "pytorch"]
    with open(log, "a") as f, tempfile.TemporaryDirectory(prefix="vlprompt-progress-") as tmp:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        progress = Path(tmp) / "progress.json"
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, pass_fds=held_lock_fds(),
                                env={**os.environ, PROGRESS_FILE_ENV: str(progress)})
        returncode = follow_process(proc, progress)
    if returncode != 0:
        raise RuntimeError(f"command failed ({returncode}): {' '.join(cmd)}; see {log}")


def read_top1(path: Path) -> float:
    """Top-1 accuracy from a ``results.json`` written by tools/train.py or tools/test.py."""
    return json.loads(Path(path).read_text())["metrics"]["accuracy/top1"]


def read_accuracy(path: Path, task: str = "accuracy") -> tuple[float, float | None]:
    """Top-1 and ECE (%) of ``task`` (``accuracy``, ``base``, ``novel``) from a ``results.json`` written by
    tools/train.py or tools/test.py; the ECE is ``None`` in a file from before it was measured."""
    metrics = json.loads(Path(path).read_text())["metrics"]
    return metrics[f"{task}/top1"], metrics.get(f"{task}/ece")


def finished_result(run_dir: Path) -> dict | None:
    """The stored result of a finished run, or ``None`` if the run has not finished."""
    path = Path(run_dir) / RESULT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def save_result(run_dir: Path, result: dict) -> dict:
    """Store a run's result (atomically: a half-written file never marks a run as finished)."""
    atomic_write_text(Path(run_dir) / RESULT_FILE, json.dumps(result, indent=2))
    return result

MAX_LISTED = 8
"""How many differing keys (and conflicting runs) a refusal lists before summing up the rest."""

@dataclass
class SweepRun:
    """One run of a sweep: its folder and the config (file and ``key=value`` overrides) it trains with.

    ``legacy_outputs``: files that, all present in a folder without a result file, mark a run
    finished by a vlprompt that did not record configs (transfer.py once kept no result file).
    """

    run_dir: Path
    config_file: Path
    options: list[str]
    legacy_outputs: tuple[str, ...] = ()
    settings: dict = field(default_factory=dict)
    """What the run depends on besides its config (a tool's ``--limit`` or ``--checkpoint``), as plain JSON:
    recorded with the config under :data:`SETTINGS_KEY`, so a run made with other settings is not reused."""
    config: dict = field(default_factory=dict, repr=False)
    """The effective config (with :attr:`settings`), filled in by :func:`vlprompt.engine.sweep.plan_runs`."""

    @property
    def digest(self) -> str:
        """The hash of :attr:`config`."""
        return config_hash(self.config)


def verdict(run: SweepRun) -> tuple[dict | None, str | None]:
    """``(result to reuse, None)``, ``(None, None)`` to run it, or ``(None, why it conflicts)``."""
    try:
        done = finished_result(run.run_dir)
    except ValueError as err:
        return None, f"{run.run_dir / RESULT_FILE} cannot be read ({err})"
    if done is None:
        if run.legacy_outputs and all((run.run_dir / f).is_file() for f in run.legacy_outputs):
            return None, (f"{run.run_dir} holds the outputs of a finished run ({', '.join(run.legacy_outputs)}) "
                          f"but no {RESULT_FILE} recording the config they came from")
        # an interrupted run resumes only with the settings it started with; so does a finished one whose
        # sweep record was never written (a full disk): resuming it pairs its prompts with other results
        record = read_run_record(run.run_dir)
        if record is not None and isinstance(record.get("settings"), dict):
            diffs = config_differences(record["settings"], run.config)
            if diffs:
                state = "a finished" if record.get("finished") else "an unfinished"
                return None, (f"{run.run_dir} holds {state} run with other settings ("
                              + ", ".join(f"{k}: {show_value(a)} -> {show_value(b)}" for k, a, b in diffs[:MAX_LISTED])
                              + (f" and {len(diffs) - MAX_LISTED} more" if len(diffs) > MAX_LISTED else "") + ")")
        return None, None
    if not isinstance(done.get("config"), dict):
        return None, (f"{run.run_dir} finished before sweeps recorded their config (its {RESULT_FILE} has none), "
                      "so whether it matches this sweep is unknown")
    if (done.get("config_hash") or config_hash(done["config"])) == run.digest:
        return done, None
    diffs = config_differences(done["config"], run.config)
    if not diffs:
        return None, f"{run.run_dir} records config hash {done.get('config_hash')}, this sweep's is {run.digest}"
    shown = diffs[:MAX_LISTED]
    more = f" (and {len(diffs) - len(shown)} more keys)" if len(diffs) > len(shown) else ""
    if len(shown) == 1:
        key, old, new = shown[0]
        return None, f"{run.run_dir} was run with {key}={show_value(old)}, this sweep asks for {show_value(new)}{more}"
    return None, (f"{run.run_dir} was run with " + ", ".join(f"{k}={show_value(a)}" for k, a, _ in shown)
                  + "; this sweep asks for " + ", ".join(f"{k}={show_value(b)}" for k, _, b in shown) + more)


def refusal(conflicts: Sequence[str], before_training: bool = True) -> SystemExit:
    lines = list(conflicts[:MAX_LISTED])
    if len(conflicts) > len(lines):
        lines.append(f"... and {len(conflicts) - len(lines)} more runs")
    advice = "use --overwrite to retrain it or another --work-root" if len(conflicts) == 1 else \
        "use --overwrite to retrain them or another --work-root"
    return SystemExit("\n".join(lines[:-1] + [f"{lines[-1]}; {advice}"])
                      + ("\n(nothing was trained)" if before_training else ""))


def run_or_reuse(run: SweepRun, work: Callable[[], dict], overwrite: bool = False) -> tuple[dict, bool]:
    """The run's stored result if it matches (``(result, True)``), else run ``work()`` under the
    work dir's lock and store what it returns with ``seconds`` and the config (``(result, False)``).
    ``work()`` trains with ``tools/train.py --resume`` (:data:`TRAIN_RESUME`): an interrupted run goes
    on from its last checkpoint, a fresh one starts.

    A matching record is reused without the lock (a read-only work root is fine); otherwise the
    record is checked again under the lock, in case another sweep finished the run meanwhile. With
    ``overwrite`` a conflicting record is removed before ``work()`` retrains the run.
    """
    if not run.config:
        raise ValueError(f"{run.run_dir}: a run is planned (its effective config resolved) before it runs; "
                         "vlprompt.engine.sweep.run_or_reuse plans it")
    done, _ = verdict(run)
    if done is not None:
        return done, True
    with work_dir_lock(run.run_dir):
        done, conflict = verdict(run)
        if done is not None:
            return done, True
        if conflict and not overwrite:
            raise refusal([conflict], before_training=False)
        if conflict:  # --overwrite: the old run's outputs go, so that its checkpoints are not resumed
            for path in run_outputs(run.run_dir):
                path.unlink()
        (run.run_dir / RESULT_FILE).unlink(missing_ok=True)  # never leave a record of the old run behind
        start = time.perf_counter()
        with hint_on_interrupt(SWEEP_RESUME_HINT):
            result = work()
        config_file = Path(run.config_file).resolve()
        result.update(seconds=round(time.perf_counter() - start, 1), config_hash=run.digest,
                      config_file=str(config_file.relative_to(REPO_ROOT) if config_file.is_relative_to(REPO_ROOT)
                                      else config_file), config=run.config)
        return save_result(run.run_dir, result), False


RECORD_KEYS = ("seconds", "config_hash", "config_file", "config")
"""What :func:`run_or_reuse` stores beside the result of a run's ``work()``."""


def work_result(result: Mapping) -> dict:
    """A stored result without :data:`RECORD_KEYS`: what the run's ``work()`` returned."""
    return {k: v for k, v in result.items() if k not in RECORD_KEYS}


LOCK_WAIT_S = 2.0
"""How often a run whose folder another process holds looks again (:func:`run_or_reuse_when_free`)."""


def run_or_reuse_when_free(run: SweepRun, work: Callable[[], dict], overwrite: bool = False) -> tuple[dict, bool]:
    """:func:`run_or_reuse`, waiting while another process holds the run's folder (a second sweep on the same
    work root trains it), then reusing what that process finished: a run is never trained twice at once."""
    while True:
        try:
            return run_or_reuse(run, work, overwrite)
        except WorkDirLocked:
            time.sleep(LOCK_WAIT_S)


def took(result: Mapping, reused: bool) -> str:
    """``reused`` for a run taken from an earlier sweep, else the time it took (``12 s``)."""
    return "reused" if reused else f"{result.get('seconds', 0):.0f} s"


def zero_shot_test(run: SweepRun) -> dict:
    """The work of a zero-shot reference run: zero-shot CLIP (``tools/test.py CONFIG none``) on its config's test
    split with its options; returns ``{"method": "zsclip", "top1": ...}``."""
    out = run.run_dir.resolve() / "test.json"
    run_logged([sys.executable, str(REPO_ROOT / "tools" / "test.py"), str(run.config_file), "none",
                "--work-dir", str(out.parent), "--out", str(out),
                *(["--cfg-options", *run.options] if run.options else [])],
               out.parent / "sweep.log")
    return {"method": "zsclip", "top1": read_top1(out)}
