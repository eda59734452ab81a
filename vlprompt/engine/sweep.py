"""Pieces shared by the sweep tools: where a method's config is, running one logged step, and the
result file that marks a run as finished (so an interrupted sweep skips what is done).

A finished run records the effective config it was trained with (the config file resolved with
the run's ``--cfg-options``, less :data:`VOLATILE_KEYS`) and its hash. :func:`plan_runs` checks
every run of a sweep before the first one starts: a finished run is reused only when its record
matches what the sweep asks for; otherwise the sweep stops naming the run folder and the keys that
differ, unless ``overwrite`` is given. :func:`run_or_reuse` runs one run under the work dir lock
(:mod:`vlprompt.engine.workdir`) and stores its result with the config.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from mmengine.config import DictAction

from ..errors import hint_on_interrupt
from ..io import atomic_write_text, config_hash
from ..progress import PROGRESS_FILE_ENV, follow_process
from .checkpoint import read_run_record, run_outputs
from .config import (  # noqa: F401  (re-exported: the sweeps' names since before they moved)
    VOLATILE_KEYS,
    config_differences,
    input_file_digests,
    json_plain,
    load_config,
    plain_config,
    show_value,
)
from .workdir import WorkDirLocked, held_lock_fds, work_dir_lock

REPO_ROOT = Path(__file__).resolve().parents[2]
SWEEP_RESUME_HINT = ("rerun the same command to go on: finished runs are reused and the interrupted one resumes "
                     "from its last checkpoint")
"""What a sweep interrupted by Ctrl-C tells the user."""
TRAIN_RESUME = "--resume"
"""The flag every sweep gives ``tools/train.py``: a rerun resumes the run a sweep left unfinished."""
RESULT_FILE = "sweep_result.json"
"""Written last in a run's folder, atomically: its presence means the run finished."""


COOP_FEWSHOT_EPOCHS = {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}
"""CoOp's few-shot schedule: epochs per shot count (ImageNet: 50 for every shot count)."""


def fewshot_epochs(dataset: str, shots: int) -> int | None:
    """CoOp's few-shot epochs for ``shots`` shots of ``dataset``; ``None`` for a toy dataset, which keeps
    its config's shortened schedule."""
    from ..datasets.toyworld import TOY_DATASETS

    if dataset in TOY_DATASETS:
        return None
    return 50 if dataset == "imagenet" else COOP_FEWSHOT_EPOCHS.get(shots, 200)


def config_path(method: str, dataset: str, root: Path = REPO_ROOT) -> Path:
    """``configs/<method>/<dataset's one name, with underscores>.py`` (any spelling of the dataset: ``toy_shapes``
    and ``toy-shapes`` are one config): a file, or a run composed from the method's recipe and the dataset's
    facts (:mod:`vlprompt.engine.compose`); an unknown method or dataset is refused at once, naming the
    closest ones."""
    from ..errors import ConfigNotFoundError
    from .compose import canonical_config, check_method, split_leaf

    path = root / "configs" / method / f"{dataset.replace('-', '_')}.py"
    if path.is_file():
        return path
    try:
        check_method(method, root / "configs")
        split_leaf(path.stem)
    except (ConfigNotFoundError, KeyError) as err:
        raise SystemExit(f"no config for {method} on {dataset}: {err.args[0]}") from None
    return Path(canonical_config(path))


def run_logged(cmd: list[str], log: Path, cwd: Path = REPO_ROOT) -> None:
    """Run ``cmd`` with its output appended to ``log``; a failure names the command and the log.

    The run reports its progress through a file (:mod:`vlprompt.progress`): its log file's path is
    printed when it starts and a bar follows its epochs and steps, below the sweep's bar of runs. The run
    is handed the work-dir locks this process holds (:func:`~vlprompt.engine.workdir.held_lock_fds`): it
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


def finished_result(run_dir: Path) -> dict | None:
    """The stored result of a finished run, or ``None`` if the run has not finished."""
    path = Path(run_dir) / RESULT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def save_result(run_dir: Path, result: dict) -> dict:
    """Store a run's result (atomically: a half-written file never marks a run as finished)."""
    atomic_write_text(Path(run_dir) / RESULT_FILE, json.dumps(result, indent=2))
    return result


def read_base2novel_results(method_dir: str | Path) -> list[dict]:
    """Every finished run of a base-to-novel sweep: ``<method_dir>/<dataset>/seed<S>/``."""
    return [json.loads(p.read_text()) for p in sorted(Path(method_dir).glob(f"*/seed*/{RESULT_FILE}"))]


MAX_LISTED = 8
"""How many differing keys (and conflicting runs) a refusal lists before summing up the rest."""


def parse_options(options: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings parsed exactly as tools/train.py's ``--cfg-options`` parses them."""
    namespace = argparse.Namespace()
    for option in options:
        if "=" not in option:
            raise SystemExit(f"--cfg-options: {option!r} is not key=value")
    DictAction(["--cfg-options"], "cfg_options")(argparse.ArgumentParser(), namespace, list(options))
    return namespace.cfg_options


def effective_config(config: str | Path, options: Sequence[str] = ()) -> dict[str, Any]:
    """The config a run of ``config`` with ``options`` trains with, as plain JSON, less
    :data:`VOLATILE_KEYS`. Only the config file is read: no dataset or model is built."""
    overrides = parse_options(options) or None
    try:
        cfg = load_config(config, None, overrides)
    except Exception as err:  # a bad override or config file: name both
        raise SystemExit(f"cannot load {config} with --cfg-options {' '.join(options) or '(none)'}: {err}") from err
    return plain_config(cfg)


NOT_SETTINGS = ("data_root", "input_files")
"""Recorded keys a report does not list as changed settings: where the data lives, and the digests of
the files a config names (their paths are settings; the digests follow from them)."""


@lru_cache(maxsize=256)
def _shipped(config_file: str, implied: tuple[str, ...]) -> str:
    return json.dumps(effective_config(config_file, implied))


def changed_settings(result: Mapping, implied: Sequence[str] = ()) -> dict[str, Any] | None:
    """``{dotted key: value}`` of the settings a finished run (its :data:`RESULT_FILE` record) was
    trained with that differ from its shipped config (``config_file`` as it is now, with the sweep's
    own per-run options ``implied``: seed, shots, schedule, protocol); ``None`` when the run recorded
    no config. Read from the record, not from the sweep's options, so a run an earlier sweep made with
    other ``--cfg-options`` shows them too. :data:`NOT_SETTINGS` are left out."""
    recorded, config_file = result.get("config"), result.get("config_file")
    if not isinstance(recorded, dict) or not config_file:
        return None
    path = Path(config_file)
    path = path if path.is_absolute() else REPO_ROOT / path
    shipped = json.loads(_shipped(str(path), tuple(implied)))
    return {key: new for key, _, new in config_differences(shipped, recorded)
            if key.split(".")[0] not in NOT_SETTINGS}


def option_settings(options: Iterable[str]) -> list[str]:
    """The user's ``key=value`` options as a report's changed settings (:data:`NOT_SETTINGS` left out):
    for tools whose runs keep no config record to read them from (tools/tta.py, tools/active.py)."""
    return sorted(o for o in options if o.split("=", 1)[0].split(".")[0] not in NOT_SETTINGS)


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
    config: dict = field(default_factory=dict, repr=False)
    """The effective config, filled in by :func:`plan_runs`."""

    @property
    def digest(self) -> str:
        """The hash of :attr:`config`."""
        return config_hash(self.config)


def _verdict(run: SweepRun) -> tuple[dict | None, str | None]:
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


def _refusal(conflicts: Sequence[str], before_training: bool = True) -> SystemExit:
    lines = list(conflicts[:MAX_LISTED])
    if len(conflicts) > len(lines):
        lines.append(f"... and {len(conflicts) - len(lines)} more runs")
    advice = "use --overwrite to retrain it or another --work-root" if len(conflicts) == 1 else \
        "use --overwrite to retrain them or another --work-root"
    return SystemExit("\n".join(lines[:-1] + [f"{lines[-1]}; {advice}"])
                      + ("\n(nothing was trained)" if before_training else ""))


def plan_runs(runs: Sequence[SweepRun], overwrite: bool = False) -> list[SweepRun]:
    """Resolve every run's effective config and check it against the run's record, before any
    training starts. Without ``overwrite``, a finished run that does not match stops the sweep
    (SystemExit naming each such run folder and the differing keys with both values)."""
    conflicts = []
    for run in runs:
        run.config = effective_config(run.config_file, run.options)
        _, conflict = _verdict(run)
        if conflict:
            conflicts.append(conflict)
    if conflicts and not overwrite:
        raise _refusal(conflicts)
    for conflict in conflicts:
        print(f"--overwrite: retraining: {conflict}", file=sys.stderr)
    return list(runs)


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
        run.config = effective_config(run.config_file, run.options)
    done, _ = _verdict(run)
    if done is not None:
        return done, True
    with work_dir_lock(run.run_dir):
        done, conflict = _verdict(run)
        if done is not None:
            return done, True
        if conflict and not overwrite:
            raise _refusal([conflict], before_training=False)
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


def run_sweep(jobs: Sequence[tuple], work: Callable[..., dict], overwrite: bool, desc: str,
              label: Callable[..., str], summary: Callable[[dict], str], launch: Any = None
              ) -> list[tuple[dict, bool]]:
    """A sweep's run loop: every job's run checked first (:func:`plan_runs`), then each run or reused
    (:func:`run_or_reuse`) in turn under a progress bar, writing ``<label>: <summary> (<took>)`` after it;
    with ``launch`` (:class:`~vlprompt.launch.LaunchSettings` of a parallel launcher) the runs go
    through :func:`vlprompt.launch.run_jobs` instead, with the same checks and records.

    A job is a tuple whose last item is its :class:`SweepRun`; ``work(*job)`` trains and tests it and
    ``label(*job)`` names it. Returns ``(result, reused)`` per job, in order.
    """
    from tqdm import tqdm

    plan_runs([job[-1] for job in jobs], overwrite)  # every run checked before the first one trains
    if launch is not None and launch.launcher != "sequential":
        from ..launch import run_jobs

        return run_jobs(jobs, work, overwrite, launch, desc, label, summary)
    done = []
    with tqdm(jobs, desc=desc, unit="run") as bar:
        for job in bar:
            name = label(*job)
            bar.set_postfix_str(name)
            result, reused = run_or_reuse(job[-1], partial(work, *job), overwrite)
            done.append((result, reused))
            tqdm.write(f"{name}: {summary(result)} ({took(result, reused)})")
    return done


ZERO_SHOT_KEYS = ("model.backbone.", "test_dataloader.", "data_root", "randomness.", "env_cfg.")
"""``--cfg-options`` key prefixes a zero-shot reference shares with the learner's runs: the same CLIP and
test data (training keys mean nothing to zero-shot CLIP, whose configs have no training part)."""


def zero_shot_options(options: Iterable[str]) -> list[str]:
    """The ``key=value`` options of a sweep that apply to its zero-shot reference (:data:`ZERO_SHOT_KEYS`)."""
    return [o for o in options if o.split("=", 1)[0].startswith(ZERO_SHOT_KEYS)]


def zero_shot_reference(config: str | os.PathLike, run_dir: str | os.PathLike, options: Sequence[str] = ()) -> dict:
    """Zero-shot CLIP (``tools/test.py CONFIG none``) on ``config``'s test split with ``options``, in
    ``run_dir``; returns the run's result (``top1``, ``seconds``, ...). A finished run with the same
    config is reused; one with another config is redone (it takes seconds)."""
    run = SweepRun(Path(run_dir), Path(config), list(options))
    out = run.run_dir.resolve() / "test.json"

    def work() -> dict:
        run_logged([sys.executable, str(REPO_ROOT / "tools" / "test.py"), str(run.config_file), "none",
                    "--work-dir", str(out.parent), "--out", str(out),
                    *(["--cfg-options", *run.options] if run.options else [])],
                   out.parent / "sweep.log")
        return {"method": "zsclip", "top1": read_top1(out)}

    result, _ = run_or_reuse_when_free(run, work, overwrite=True)  # two sweeps at once share the reference
    return result


def fewshot_run(method: str, dataset: str, shots: int, seed: int, run_dir: Path, options: list[str],
                epochs: int | None) -> SweepRun:
    """The few-shot run (tools/fewshot.py) of ``method`` on K = ``shots`` shots of every class of
    ``dataset`` with ``seed``, on CoOp's few-shot schedule unless ``epochs`` is given."""
    return SweepRun(run_dir, config_path(method, dataset), [*fewshot_options(dataset, shots, seed, epochs), *options])


def fewshot_options(dataset: str, shots: int, seed: int, epochs: int | None = None) -> list[str]:
    """The options a few-shot sweep gives its run of ``shots`` shots with ``seed`` (not the user's):
    all classes, CoOp's schedule (or ``epochs``), the protocol's name and shot count."""
    epochs = epochs or fewshot_epochs(dataset, shots)
    return [f"randomness.seed={seed}", f"train_dataloader.dataset.num_shots={shots}",
            "train_dataloader.dataset.subsample=all", "test_dataloader.dataset.subsample=all",
            *([f"train_cfg.max_epochs={epochs}"] if epochs else []), "protocol.name=fewshot",
            f"protocol.num_shots={shots}"]
