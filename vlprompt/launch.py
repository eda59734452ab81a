"""Where a sweep's runs execute: one after another in this process, in parallel on this machine, or as
Slurm jobs, through submitit (``--launcher sequential | local | slurm``).

Nothing about a run depends on the launcher: each job is :func:`vlprompt.runs.run_or_reuse` on one
run, as the sequential loop calls it, so a run has the same folder, ``results.json``, config hash, lock and
reuse rules wherever it executes. The parallel launchers add only the throttle and the waiting:

* ``local``: submitit's ``LocalExecutor``, ``--jobs`` runs at once; on a machine with GPUs each run is
  pinned to its own ``--gpus-per-run`` GPUs (``CUDA_VISIBLE_DEVICES``), and a run given several trains
  under torchrun (:data:`GPUS_PER_RUN_ENV`, read by :func:`vlprompt.runs.run_logged`);
* ``slurm``: one submitit job per run with ``--partition``, ``--gpus-per-run``, ``--cpus-per-run``,
  ``--time``, ``--mem``, ``--account`` and ``--slurm-extra key=value``; ``--no-wait`` submits and returns
  (the jobs are recorded in their run folders, and the same command later collects what finished and does
  not submit a run whose job is still queued or running).

Each job's submitit files (its pickled call, stdout, stderr) are in ``<run folder>/submitit/``. A run
whose folder another process holds (a second sweep on the same work root) waits for it and then reuses
its result. A failed run is named with its logs; the other runs finish, and a rerun retries only what is
missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = ["GPUS_PER_RUN_ENV", "JOB_RECORD", "LAUNCHERS", "LaunchSettings", "SweepJobFailed", "add_launcher_arguments",
           "launch_settings", "launcher_argv", "run_jobs"]

LAUNCHERS = ("sequential", "local", "slurm")
GPUS_PER_RUN_ENV = "VLPROMPT_GPUS_PER_RUN"
"""Set in a job's environment when a run has several GPUs: its ``tools/train.py`` then runs under torchrun."""
JOB_RECORD = "sweep_job.json"
"""In a run folder: the Slurm job that runs it (``--no-wait``), so that a rerun does not submit it again."""
SUBMITIT_DIR = "submitit"


class SweepJobFailed(UserError, RuntimeError):
    """Runs of a parallel sweep failed (the others finished); the message names each with its logs."""


@dataclass
class LaunchSettings:
    """How a sweep's runs are launched (see the module)."""

    launcher: str = "sequential"
    jobs: int = 2
    gpus_per_run: int = 1
    cpus_per_run: int | None = None
    partition: str | None = None
    time_min: int = 240
    mem_gb: float | None = None
    account: str | None = None
    slurm_extra: dict[str, str] = field(default_factory=dict)
    wait: bool = True


def add_launcher_arguments(parser: argparse.ArgumentParser, in_process: dict[str, str] | None = None) -> None:
    """The launcher options every sweep tool takes. ``in_process``: a tool's own launchers that run its runs
    in its process (tools/tta.py: ``{"none": ..., "pytorch": ...}``), ``{name: help}``, offered before these."""
    group = parser.add_argument_group("launching the runs (submitit)")
    own = in_process or {}
    helps = [f"{name}: {text}" for name, text in own.items()]
    group.add_argument("--launcher", choices=[*own, *LAUNCHERS], default=next(iter(own), "sequential"),
                       help="; ".join([*helps, "sequential: one run after another here; local: --jobs runs at once on "
                                       "this machine (each on its own GPUs when there are GPUs); slurm: one Slurm job "
                                       "per run"]))
    group.add_argument("--jobs", type=int, default=2, help="local: runs at once (at most the GPUs / --gpus-per-run)")
    group.add_argument("--gpus-per-run", type=int, default=1,
                       help="GPUs per run (local and slurm; a run with several trains under torchrun); ignored "
                            "by local on a machine without GPUs")
    group.add_argument("--cpus-per-run", type=int, default=None, help="slurm: --cpus-per-task of each job")
    group.add_argument("--partition", default=None, help="slurm: the partition")
    group.add_argument("--time", type=int, default=240, metavar="MINUTES", help="slurm: time limit of each job")
    group.add_argument("--mem", type=float, default=None, metavar="GB", help="slurm: memory of each job")
    group.add_argument("--account", default=None, help="slurm: the account charged")
    group.add_argument("--slurm-extra", nargs="+", default=[], metavar="KEY=VALUE",
                       help="slurm: more sbatch options (constraint=a100 qos=high ...)")
    group.add_argument("--no-wait", action="store_true",
                       help="slurm: submit and return; the same command later collects the finished runs")


def launch_settings(args: argparse.Namespace) -> LaunchSettings:
    """The :class:`LaunchSettings` of parsed arguments; a usage error for values no launcher can use."""
    from .cli import UsageError

    if args.jobs < 1 or args.gpus_per_run < 0 or (args.cpus_per_run is not None and args.cpus_per_run < 1):
        raise UsageError("--jobs and --cpus-per-run must be at least 1, --gpus-per-run at least 0")
    if args.time < 1:
        raise UsageError(f"--time {args.time}: a job's time limit is at least 1 minute")
    extra = {}
    for item in args.slurm_extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--slurm-extra {item!r} is not KEY=VALUE")
        extra[key.replace("-", "_")] = value
    if args.no_wait and args.launcher != "slurm":
        raise UsageError("--no-wait goes with --launcher slurm")
    launcher = args.launcher if args.launcher in LAUNCHERS else "sequential"  # a tool's own in-process launcher
    return LaunchSettings(launcher, args.jobs, args.gpus_per_run, args.cpus_per_run, args.partition, args.time,
                          args.mem, args.account, extra, not args.no_wait)


def launcher_argv(args: argparse.Namespace) -> list[str]:
    """The launcher options of parsed arguments as a command line, for a tool that runs another sweep tool
    (tools/compare_methods.py making its zero-shot runs through tools/base2novel.py)."""
    argv = ["--launcher", args.launcher, "--jobs", str(args.jobs), "--gpus-per-run", str(args.gpus_per_run),
            "--time", str(args.time)]
    for flag, value in (("--cpus-per-run", args.cpus_per_run), ("--partition", args.partition),
                        ("--mem", args.mem), ("--account", args.account)):
        if value is not None:
            argv += [flag, str(value)]
    if args.slurm_extra:
        argv += ["--slurm-extra", *args.slurm_extra]
    return argv + (["--no-wait"] if args.no_wait else [])


# ------------------------------------------------------------------------------------------ one job
def sweep_job(work: Callable[[], dict], run: Any, overwrite: bool, gpus: int = 0, threads: int | None = None
              ) -> tuple[dict, bool]:
    """What a job executes: :func:`~vlprompt.runs.run_or_reuse` on ``run`` (planned), waiting while another
    process holds its folder (a second sweep on the same work root), then reusing what it finished.
    ``threads``: the CPU threads its runs use (parallel runs on one machine share its cores)."""
    from .runs import run_or_reuse_when_free

    if gpus > 1:
        os.environ[GPUS_PER_RUN_ENV] = str(gpus)
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(threads)
    return run_or_reuse_when_free(run, work, overwrite)


def _by_value(work: Callable) -> None:
    """Let submitit pickle the tool's functions by value: a tool is a script, not an importable module."""
    import cloudpickle

    target = getattr(work, "func", work)
    module = sys.modules.get(getattr(target, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    if module is not None and module.__name__ != "__main__" and path and Path(path).parent.name == "tools":
        cloudpickle.register_pickle_by_value(module)


def _gpu_ids() -> list[int]:
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001 - no torch GPU build: no GPUs
        return []


# ------------------------------------------------------------------------------------------ the loop
def run_jobs(jobs: Sequence[tuple], work: Callable[..., dict], overwrite: bool, settings: LaunchSettings,
             desc: str, label: Callable[..., str], summary: Callable[[dict], str], references: Sequence[Any] = ()
             ) -> list[tuple[dict, bool]]:
    """Run (or reuse) every job's run through ``settings.launcher`` (every run already checked by
    :func:`~vlprompt.engine.sweep.plan_runs`): ``(result, reused)`` per job in order. ``references``: planned
    zero-shot reference runs (:func:`vlprompt.runs.zero_shot_test`) launched beside them, so that no CLIP is
    tested in the sweep's own process (a Slurm login node); a tool reads them after, reused. After
    ``--no-wait`` submitted runs that are not finished yet, it says so and ends the tool (``SystemExit(0)``).
    Raises :class:`SweepJobFailed` naming the runs that failed, once the others are done."""
    import logging

    from tqdm import tqdm

    from .runs import verdict, zero_shot_test

    logging.getLogger("submitit").addFilter(_quiet_sacct)

    _by_value(work)
    n_jobs = len(jobs)
    runs = [job[-1] for job in jobs] + list(references)
    calls = [partial(work, *job) for job in jobs] + [partial(zero_shot_test, run) for run in references]
    names = [label(*job) for job in jobs] + [f"zero-shot reference {run.run_dir}" for run in references]
    overwrites = [overwrite] * n_jobs + [True] * len(references)  # a reference with another config is redone

    def summarised(i: int) -> str:
        return summary(results[i][0]) if i < n_jobs else f"top-1 {results[i][0]['top1']:.2f}"

    results: dict[int, tuple[dict, bool]] = {}
    pending: list[int] = []
    for i, run in enumerate(runs):
        done, _ = verdict(run)
        if done is not None:
            results[i] = (done, True)
            (run.run_dir / JOB_RECORD).unlink(missing_ok=True)  # a --no-wait job that finished: collected
        else:
            pending.append(i)
    gpu_ids = _gpu_ids() if settings.launcher == "local" else []
    per_run = settings.gpus_per_run if (gpu_ids or settings.launcher == "slurm") else 0
    width = settings.jobs
    if settings.launcher == "local" and gpu_ids and per_run:
        width = max(1, min(width, len(gpu_ids) // per_run))
    threads = None
    if settings.launcher == "local" and not gpu_ids:  # runs side by side on the CPUs share them
        threads = max(1, len(os.sched_getaffinity(0)) // width)
    failures: list[str] = []
    queued: list[str] = []
    bar = tqdm(total=len(runs), desc=desc, unit="run", initial=len(results))
    for i in sorted(results):
        tqdm.write(f"{names[i]}: {summarised(i)} (reused)")
    running: dict[int, tuple[Any, list[int]]] = {}
    free_gpus = list(gpu_ids)
    todo = list(pending)
    try:
        if settings.launcher == "slurm":
            todo = _skip_queued(runs, todo, queued)
        while todo or running:
            while todo and (settings.launcher == "slurm" or len(running) < width):
                i = todo.pop(0)
                run = runs[i]
                gpus = [free_gpus.pop(0) for _ in range(per_run)] if settings.launcher == "local" and gpu_ids else []
                executor = _executor(run.run_dir, settings, per_run, gpus)
                started = executor.submit(sweep_job, calls[i], run, overwrites[i], per_run, threads)
                running[i] = (started, gpus)
                if settings.launcher == "slurm":
                    _record_job(run.run_dir, started)
            if settings.launcher == "slurm" and not settings.wait:
                for i, (started, _) in running.items():
                    queued.append(f"{names[i]}: Slurm job {started.job_id}")
                running.clear()
                break
            finished = [i for i, (started, _) in running.items() if started.done()]
            if settings.launcher == "slurm":
                finished += [i for i in _vanished(running, finished)]
            if not finished:
                time.sleep(0.5)
                continue
            for i in finished:
                started, gpus = running.pop(i)
                free_gpus.extend(gpus)
                name = names[i]
                try:
                    if not started.done():
                        raise RuntimeError(f"Slurm job {started.job_id} left the queue without a result (cancelled, "
                                           "out of time or killed)")
                    results[i] = started.result()
                except Exception as err:  # noqa: BLE001 - a run's failure is reported, the others go on
                    failures.append(f"{name}: {_first_line(err)} (logs: {started.paths.stdout}, {started.paths.stderr}"
                                    f"; the run's own log: {runs[i].run_dir / 'sweep.log'})")
                    tqdm.write(f"{name}: FAILED (see {started.paths.stderr})")
                else:
                    tqdm.write(f"{name}: {summarised(i)} ({_took(results[i])})")
                (runs[i].run_dir / JOB_RECORD).unlink(missing_ok=True)
                bar.update()
    except KeyboardInterrupt:
        for started, _ in running.values():
            started.cancel(check=False)
        raise
    finally:
        bar.close()
    if failures:
        raise SweepJobFailed(f"{len(failures)} of {len(runs)} runs failed (the others finished; rerun the same "
                             "command to retry only these):\n" + "\n".join(failures))
    if queued:
        print(f"{len(queued)} runs submitted or still queued; rerun the same command to collect them:\n"
              + "\n".join(queued))
        raise SystemExit(0)
    return [results[i] for i in range(n_jobs)]


def _quiet_sacct(record: Any) -> bool:
    """Drop submitit's warning that ``sacct`` fails, which it logs at every poll on a Slurm without accounting
    (job states then come from the result files and ``squeue``: :func:`_vanished`)."""
    return "Bypassing sacct error" not in record.getMessage()


_GONE: dict[str, float] = {}
GONE_GRACE_S = 20.0
"""How long a Slurm job may be missing from ``squeue`` without its result before it counts as failed."""


def _vanished(running: dict[int, tuple[Any, list[int]]], finished: list[int]) -> list[int]:
    """The running Slurm jobs that left the queue without a result (cancelled, out of time, killed): without
    Slurm accounting submitit cannot tell, and would wait for them for ever."""
    import subprocess

    ids = {str(started.job_id): i for i, (started, _) in running.items() if i not in finished}
    if not ids:
        return []
    try:
        listed = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], capture_output=True, text=True,
                                timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return []
    gone = []
    now = time.monotonic()
    for job_id, i in ids.items():
        if job_id in listed or running[i][0].done():
            _GONE.pop(job_id, None)
        elif now - _GONE.setdefault(job_id, now) > GONE_GRACE_S:
            gone.append(i)
    return gone


def _took(result: tuple[dict, bool]) -> str:
    from .runs import took

    return took(*result)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(err).__name__


def _executor(run_dir: Path, settings: LaunchSettings, per_run: int, gpus: list[int]) -> Any:
    import submitit

    folder = Path(run_dir) / SUBMITIT_DIR
    if settings.launcher == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=settings.time_min, gpus_per_node=len(gpus), visible_gpus=gpus)
        return executor
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params: dict[str, Any] = {"timeout_min": settings.time_min, "slurm_job_name": f"vlprompt-{Path(run_dir).name}"}
    if per_run:
        params["gpus_per_node"] = per_run
    if settings.cpus_per_run:
        params["cpus_per_task"] = settings.cpus_per_run
    if settings.partition:
        params["slurm_partition"] = settings.partition
    if settings.mem_gb:
        params["mem_gb"] = settings.mem_gb
    if settings.account:
        params["slurm_account"] = settings.account
    if settings.slurm_extra:
        params["slurm_additional_parameters"] = dict(settings.slurm_extra)
    executor.update_parameters(**params)
    return executor


def _record_job(run_dir: Path, job: Any) -> None:
    from .io import atomic_write_json

    atomic_write_json(Path(run_dir) / JOB_RECORD, {"job_id": str(job.job_id), "cluster": "slurm",
                                                   "submitted": time.strftime("%Y-%m-%d %H:%M:%S")})


def _skip_queued(runs: Sequence[Any], todo: list[int], queued: list[str]) -> list[int]:
    """``todo`` less the runs whose recorded Slurm job (``--no-wait`` earlier) is still pending or running."""
    import submitit

    left = []
    for i in todo:
        record_path = runs[i].run_dir / JOB_RECORD
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            left.append(i)
            continue
        state = submitit.SlurmJob(folder=runs[i].run_dir / SUBMITIT_DIR, job_id=str(record["job_id"])).state
        if state in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED"):
            queued.append(f"{runs[i].run_dir}: Slurm job {record['job_id']} is {state.lower()}")
        else:
            record_path.unlink(missing_ok=True)  # it ended without finishing the run: submit it again
            left.append(i)
    return left
