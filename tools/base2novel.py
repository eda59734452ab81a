"""Base-to-novel sweep: train on base classes, test on base and novel, for datasets x seeds.

    python tools/base2novel.py --method coop --datasets toy-shapes toy-hues --seeds 1 2 3
    python tools/base2novel.py --method maple --datasets all --seeds 1 2 3 --data-root /data

Each run lives in ``<work-root>/<method>/<dataset>/seed<S>/`` and ends with ``results.json``
(base, novel, HM); finished runs are reused, so an interrupted sweep resumes where it stopped. A
finished run records its effective config: one that another sweep ran with other settings stops
this one before anything trains (``--overwrite`` retrains it).
The sweep writes ``base2novel.md``, ``.csv`` and ``.png`` to ``<work-root>/<method>/``; each names
the settings the runs changed from the shipped configs (``--cfg-options``, read from the runs' records).
``--method zsclip`` evaluates zero-shot CLIP (nothing is trained).
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from vlprompt.cli import HelpFormatter, add_sweep_arguments, run_tool, sweep_options
from vlprompt.launch import launch_settings

if TYPE_CHECKING:  # vlprompt.evaluation (torch, mmengine) is imported after the arguments are parsed
    from vlprompt.runs import SweepRun


def sweep_run(method: str, dataset: str, seed: int, run_dir: Path, options: list[str]) -> SweepRun:
    """The run of ``method`` on ``dataset`` with ``seed``, in ``run_dir``."""
    from vlprompt.engine.sweep import SweepRun, config_path

    return SweepRun(run_dir, config_path(method, dataset), [f"randomness.seed={seed}", *options])


def run_one(method: str, dataset: str, seed: int, run: SweepRun) -> dict:
    """Train (unless zero-shot), test base and novel; returns the run's result."""
    from vlprompt.runs import TRAIN_RESUME, read_accuracy, run_logged
    from vlprompt.tables import harmonic_mean

    run_dir = run.run_dir.resolve()  # the commands run in the repository root
    config = str(run.config_file)
    log = run_dir / "sweep.log"
    py = sys.executable
    opts = ["--cfg-options", *run.options]
    if method.split("/")[0] == "zsclip":  # nothing to train (zsclip, zsclip/descriptions): test base and novel
        for subsample in ("base", "novel"):
            run_logged([py, "tools/test.py", config, "none", "--subsample", subsample, "--work-dir", str(run_dir),
                  "--out", str(run_dir / f"test_{subsample}.json"), *opts], log)
        (base, base_ece), (novel, novel_ece) = (read_accuracy(run_dir / f"test_{s}.json") for s in ("base", "novel"))
    else:  # train.py tests the last-epoch model on base and novel classes
        run_logged([py, "tools/train.py", config, "--work-dir", str(run_dir), TRAIN_RESUME, *opts], log)
        (base, base_ece), (novel, novel_ece) = (read_accuracy(run_dir / "results.json", s) for s in ("base", "novel"))
    return {"method": method, "dataset": dataset, "seed": seed, "base": base, "novel": novel,
            "hm": harmonic_mean(base, novel), "base_ece": base_ece, "novel_ece": novel_ece}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--method", required=True, help="a folder of configs/ (coop, cocoop, maple, zsclip, ...)")
    parser.add_argument("--datasets", nargs="+", default=["all"], help="'all' for the 11 benchmarks, or names")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    add_sweep_arguments(parser, "work_dirs/base2novel", data_root_help="benchmarks' root (default: $VLPROMPT_DATA)")
    args = parser.parse_args(argv)
    launch = launch_settings(args)  # values no launcher can use: one line, before any work
    from vlprompt.cli import dataset_arguments, method_argument

    args.method = method_argument(args.method)  # one name per method and dataset: one run folder, one table row
    if args.datasets != ["all"]:
        args.datasets = dataset_arguments(args.datasets)

    from vlprompt.datasets import BASE2NOVEL_DATASETS
    from vlprompt.engine.sweep import config_path, run_sweep
    from vlprompt.evaluation.report import (
        base2novel_table,
        markdown_table,
        run_settings,
        seed_options,
        write_base2novel_report,
    )
    from vlprompt.tables import settings_note

    datasets = list(BASE2NOVEL_DATASETS) if args.datasets == ["all"] else args.datasets
    for dataset in datasets:  # every config must exist before the first run starts
        config_path(args.method, dataset)
    options = sweep_options(args)
    out_dir = args.work_root / args.method
    jobs = [(d, s, sweep_run(args.method, d, s, out_dir / d / f"seed{s}", options))
            for d in datasets for s in args.seeds]
    start = time.perf_counter()
    done = run_sweep(jobs, partial(run_one, args.method), args.overwrite, f"{args.method} base-to-novel",
                     lambda dataset, seed, _: f"{dataset} seed {seed}",
                     lambda r: f"base {r['base']:.2f}  novel {r['novel']:.2f}  HM {r['hm']:.2f} ",
                     launch=launch)
    runs = [result for result, _ in done]
    reused = [(dataset, seed) for (dataset, seed, _), (_, was_reused) in zip(jobs, done, strict=True) if was_reused]
    files = write_base2novel_report(runs, out_dir, args.method, reused)
    print(markdown_table(base2novel_table(runs), f"{args.method}: base-to-novel", per_seed=False))
    print(settings_note(run_settings(runs, seed_options)) + "\n")
    print(f"{len(runs)} runs ({len(reused)} reused) in {time.perf_counter() - start:.0f} s; tables: {files['md']}, "
          f"{files['csv']}; plot: {files['png']}")
    return runs


if __name__ == "__main__":
    run_tool(main)
