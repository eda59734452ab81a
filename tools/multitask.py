"""MVLPT's source-to-target protocol, swept over prompt families, shot counts and seeds.

    python tools/multitask.py --families mcoop mvpt mupt --shots 1 2 4 --seeds 1 2 3     # the toy table
    python tools/multitask.py --families mcoop --shots 1 --seeds 1 --target dtd \\
        --source-config configs/mvlpt/mcoop/source_coop11.py --data-root /data

For each family, K and seed: the source prompt is trained on the union of the source tasks with K
shots per class (``configs/mvlpt/<family>/toy_source.py`` by default, seed S); then the target
(``configs/mvlpt/<family>/toy_target.py``: toy-shapes, K shots of all classes) is

* tested with the source prompt as it is (``source only``: no target image seen),
* trained from the family's random init (``random init``: the single-task baseline), and
* trained from the source prompt (``MVLPT init``: ``load_from`` its ``learned.safetensors``).

Zero-shot CLIP on all classes of the target test split (``configs/zsclip/<target>.py``) is the reference. Runs live
in ``<work-root>/<family>/shots<K>/seed<S>/{source,source_only,random_init,mvlpt_init}/``; finished
ones are reused when their recorded config matches (a mismatch stops the sweep before anything
trains; ``--overwrite`` retrains). Writes ``multitask.md`` and ``multitask.csv`` (mean and
population standard deviation over seeds) to the work root; both name the settings the runs changed
from the shipped configs (the sweep's own seed, shots and source prompt are not changes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from vlprompt.cli import HelpFormatter, add_sweep_arguments, run_tool, sweep_options
from vlprompt.launch import launch_settings
from vlprompt.tables import markdown_table, summarise_settings, write_tables

if TYPE_CHECKING:
    from vlprompt.runs import SweepRun

FAMILIES = ("mcoop", "mvpt", "mupt")
ROWS = ("source only", "random init", "MVLPT init")


def _train(run: SweepRun, log_name: str = "sweep.log") -> dict:
    from vlprompt.runs import TRAIN_RESUME, read_top1, run_logged

    run_dir = run.run_dir.resolve()
    run_logged([sys.executable, "tools/train.py", str(run.config_file), "--work-dir", str(run_dir),
                TRAIN_RESUME, "--cfg-options", *run.options], run_dir / log_name)
    return {"top1": read_top1(run_dir / "results.json")}


def _source_job(family: str, shots: int, seed: int, run: SweepRun) -> dict:
    """A parallel sweep's job: train one source prompt."""
    return _train(run)


def _row_job(family: str, shots: int, seed: int, row: str, learned: Path, run: SweepRun) -> dict:
    """A parallel sweep's job: one target row (the source tested as it is, or a target trained)."""
    return _test(run, learned) if row == "source only" else _train(run)


def _test(run: SweepRun, checkpoint: Path) -> dict:
    from vlprompt.runs import read_top1, run_logged

    run_dir = run.run_dir.resolve()
    out = run_dir / "test.json"
    run_logged([sys.executable, "tools/test.py", str(run.config_file), str(checkpoint.resolve()), "--work-dir",
                str(run_dir), "--out", str(out), "--cfg-options", *run.options], run_dir / "sweep.log")
    return {"top1": read_top1(out)}


def summarise(results: list[dict]) -> list[dict]:
    """Mean and population std over seeds per (family, shots, row)."""
    groups: dict[tuple, list[float]] = {}
    for r in results:
        groups.setdefault((r["family"], r["shots"], r["row"]), []).append(r["top1"])
    return [{"family": f, "shots": k, "row": row, "seeds": len(v), "mean": statistics.fmean(v),
             "std": statistics.pstdev(v)} for (f, k, row), v in groups.items()]


def markdown(summary: list[dict], zero_shot: float, target: str) -> str:
    """One table: a row per (family, start), a column per shot count; zero-shot CLIP first."""
    shots = sorted({s["shots"] for s in summary})
    cell = {(s["family"], s["row"], s["shots"]): s for s in summary}
    rows = [["zero-shot CLIP", "-"] + [f"{zero_shot:.2f}" for _ in shots]]
    for family in dict.fromkeys(s["family"] for s in summary):
        for row in ROWS:
            cells = [cell.get((family, row, k)) for k in shots]
            rows.append([family, row] + [f"{c['mean']:.2f} ± {c['std']:.2f}" if c else "-" for c in cells])
    header = ["family", "start"] + [f"{k} shot{'s' if k > 1 else ''}" for k in shots]
    return markdown_table(header, rows, f"MVLPT on {target}: target top-1 (mean ± std over seeds)")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--target", default="toy-shapes",
                        help="the target dataset (its zsclip config is the reference)")
    parser.add_argument("--source-config", default=None,
                        help="source config, {family} filled in (default configs/mvlpt/{family}/toy_source.py)")
    parser.add_argument("--target-config", default=None,
                        help="target config, {family} filled in (default configs/mvlpt/{family}/toy_target.py)")
    add_sweep_arguments(parser, "work_dirs/multitask", overwrite_help="retrain finished runs whose config differs")
    args = parser.parse_args(argv)
    launch = launch_settings(args)  # values no launcher can use: one line, before any work
    from vlprompt.cli import dataset_arguments

    args.target = dataset_arguments([args.target], "--target")[0]  # one name per dataset: one reference folder
    from tqdm import tqdm

    from vlprompt.engine.compose import config_exists
    from vlprompt.engine.sweep import (
        REPO_ROOT,
        SweepRun,
        changed_settings,
        config_path,
        plan_run,
        plan_runs,
        run_or_reuse,
        zero_shot_options,
        zero_shot_reference,
    )

    source_tpl = args.source_config or "configs/mvlpt/{family}/toy_source.py"
    target_tpl = args.target_config or "configs/mvlpt/{family}/toy_target.py"
    common = sweep_options(args)
    jobs = []
    for family in args.families:
        source_cfg, target_cfg = (REPO_ROOT / t.format(family=family) for t in (source_tpl, target_tpl))
        for path in (source_cfg, target_cfg):
            if not config_exists(path):
                raise SystemExit(f"no config {path}")
        for k in args.shots:
            for seed in args.seeds:
                base = args.work_root / family / f"shots{k}" / f"seed{seed}"
                opts = [*common, f"randomness.seed={seed}", f"train_dataloader.dataset.num_shots={k}"]
                source = SweepRun(base / "source", source_cfg, [*opts, f"protocol.num_shots={k}"])
                learned = (base / "source" / "learned.safetensors").resolve()
                target_opts = [*opts, f"protocol.num_shots={k}"]
                jobs.append((family, k, seed, source, [
                    ("source only", SweepRun(base / "source_only", target_cfg, list(target_opts))),
                    ("random init", SweepRun(base / "random_init", target_cfg, list(target_opts))),
                    ("MVLPT init", SweepRun(base / "mvlpt_init", target_cfg, [*target_opts, f"load_from={learned}"])),
                ]))
    plan_runs([run for *_, source, rows in jobs for run in (source, *(r for _, r in rows))], args.overwrite)
    reference = SweepRun(args.work_root / "zero_shot" / args.target, config_path("zsclip", args.target),
                         ["test_dataloader.dataset.subsample=all", *zero_shot_options(common)])  # every class
    results, changed = [], []

    def record(run: SweepRun, result: dict) -> None:  # the run's changes from its shipped config
        changed.append(changed_settings(result, [o for o in run.options if o not in common]))

    if launch.launcher != "sequential":  # every source side by side, then every target row (vlprompt.launch)
        from vlprompt.launch import run_jobs

        sources = run_jobs([(family, k, seed, source) for family, k, seed, source, _ in jobs], _source_job,
                           args.overwrite, launch, "MVLPT sources", lambda f, k, s, _: f"{f} {k}-shot seed {s} source",
                           lambda r: f"top-1 {r['top1']:.2f}", [plan_run(reference)])  # zero-shot beside them
        row_jobs = [(family, k, seed, row, source.run_dir / "learned.safetensors", run)
                    for family, k, seed, source, rows in jobs for row, run in rows]
        targets = iter(run_jobs(row_jobs, _row_job, args.overwrite, launch, "MVLPT targets",
                                lambda f, k, s, row, *_: f"{f} {k}-shot seed {s} {row}",
                                lambda r: f"top-1 {r['top1']:.2f}"))
        for (family, k, seed, source, rows), (src, _) in zip(jobs, sources, strict=True):
            record(source, src)
            for row, run in rows:
                result, reused = next(targets)
                record(run, result)
                results.append({"family": family, "shots": k, "seed": seed, "row": row, "top1": result["top1"],
                                "source_top1": src["top1"], "reused": reused})
        jobs = []  # done: the sequential loop below has nothing left
    with tqdm(jobs, desc="MVLPT source -> target", unit="seed") as bar:
        for family, k, seed, source, rows in bar:
            bar.set_postfix_str(f"{family} {k}-shot seed {seed}")
            src, _ = run_or_reuse(source, lambda s=source: _train(s), args.overwrite)
            record(source, src)
            learned = source.run_dir / "learned.safetensors"
            for row, run in rows:
                work = (lambda r=run, c=learned: _test(r, c)) if row == "source only" else (lambda r=run: _train(r))
                result, reused = run_or_reuse(run, work, args.overwrite)
                record(run, result)
                results.append({"family": family, "shots": k, "seed": seed, "row": row, "top1": result["top1"],
                                "source_top1": src["top1"], "reused": reused})
            tqdm.write(f"{family} {k}-shot seed {seed}: source (its tasks) {src['top1']:.2f}; target: " + ", ".join(
                f"{r['row']} {r['top1']:.2f}" for r in results[-3:]))
    zs = zero_shot_reference(reference)  # made, or launched above
    summary = summarise(results)
    text = markdown(summary, zs["top1"], args.target)
    files = write_tables(args.work_root, "multitask", text, ["family", "shots", "row", "seeds", "mean", "std"], summary,
                         summarise_settings(changed))
    print(files["md"].read_text())
    print(f"tables: {args.work_root / 'multitask.md'}, {args.work_root / 'multitask.csv'}")
    return results


if __name__ == "__main__":
    run_tool(main)
