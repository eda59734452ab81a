"""Base-to-novel results of several methods side by side, from finished sweeps.

    python tools/compare_methods.py --methods zsclip coop cocoop kgcoop maple promptsrc
    python tools/compare_methods.py --methods zsclip coop --datasets toy-patterns --out compare.md

Reads ``<work-root>/<method>/<dataset>/seed<S>/sweep_result.json`` as written by
``tools/base2novel.py`` (never its logs). Per dataset base and novel are averaged over seeds and HM
is taken of the means; the Average row is the HM of the averaged base and novel accuracies. The
best method's base, novel and HM of each row are bold; a last line names, per method, the settings
its runs changed from the shipped configs (from the configs the runs recorded).
Zero-shot CLIP (``zsclip``) needs no sweep of its own: for a dataset the other methods ran and
zsclip has no results for, they are made first on the other methods' seeds (``tools/base2novel.py
--method zsclip`` with the other runs' backbone; seconds per run, nothing is trained), through the launcher
given (``--launcher local|slurm`` and its options, as every sweep tool takes them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlprompt.cli import HelpFormatter, add_debug_argument, run_tool

ZERO_SHOT = "zsclip"


def backbone_options(runs: list[dict]) -> list[str]:
    """``model.backbone.<key>=<value>`` of the backbone the finished ``runs`` recorded (the first one that has it)."""
    for run in runs:
        backbone = ((run.get("config") or {}).get("model") or {}).get("backbone")
        if isinstance(backbone, dict):
            return [f"model.backbone.{k}={v}" for k, v in backbone.items()
                    if v is None or isinstance(v, (bool, int, float, str))]
    return []


def make_zero_shot_runs(work_root: Path, others: list[dict], have: list[dict], launch: list[str] = ()) -> None:
    """Run ``tools/base2novel.py --method zsclip`` on the datasets of ``others`` that ``have`` lacks, with their seeds
    (zero-shot CLIP trains nothing: a dataset with results for some seed needs no more), through ``launch`` (the
    launcher options)."""
    done = {r["dataset"] for r in have}
    missing = sorted({(r["dataset"], r["seed"]) for r in others if r["dataset"] not in done})
    if not missing:
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import base2novel

    datasets = sorted({d for d, _ in missing})
    seeds = sorted({s for _, s in missing})
    argv = ["--method", ZERO_SHOT, "--datasets", *datasets, "--seeds", *map(str, seeds), "--work-root", str(work_root)]
    options = backbone_options(others)
    if options:
        argv += ["--cfg-options", *options]
    argv += list(launch)
    print(f"no {ZERO_SHOT} results under {work_root / ZERO_SHOT} for " + ", ".join(f"{d} seed {s}" for d, s in missing)
          + f": running tools/base2novel.py {' '.join(argv)} (zero-shot: seconds per run)", flush=True)
    base2novel.main(argv)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--methods", nargs="+", required=True)
    parser.add_argument("--datasets", nargs="+", default=None, help="only these datasets (default: all found)")
    parser.add_argument("--work-root", type=Path, default=Path("work_dirs/base2novel"))
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    add_debug_argument(parser)
    from vlprompt.launch import add_launcher_arguments, launch_settings, launcher_argv  # the standard library only

    add_launcher_arguments(parser)
    args = parser.parse_args(argv)
    launch_settings(args)  # a launcher value no launcher can use: refused before any work
    if args.datasets is not None:  # one name per dataset, as tools/base2novel.py names its run folders and rows
        from vlprompt.cli import dataset_arguments

        args.datasets = dataset_arguments(args.datasets)
    from vlprompt.engine.sweep import read_base2novel_results
    from vlprompt.evaluation.report import comparison_table, run_settings, seed_options
    from vlprompt.io import atomic_write_text
    from vlprompt.tables import settings_note

    def finished(method: str) -> list[dict]:
        return [r for r in read_base2novel_results(args.work_root / method)
                if args.datasets is None or r["dataset"] in args.datasets]

    if ZERO_SHOT in args.methods:
        others = [r for m in args.methods if m != ZERO_SHOT for r in finished(m)]
        make_zero_shot_runs(args.work_root, others, finished(ZERO_SHOT), launcher_argv(args))
    runs, lines = {}, []
    for method in args.methods:
        found = finished(method)
        if not found:
            parser.error(f"no finished runs for {method!r} under {args.work_root / method} "
                         f"(run tools/base2novel.py --method {method} first)")
        runs[method] = found
        seconds = sum(r.get("seconds", 0.0) for r in found)
        lines.append(f"- {method}: {len(found)} runs, {seconds / 60:.1f} min in all")
    changed = [f"{method}: {s}" for method, found in runs.items() for s in run_settings(found, seed_options)]
    table = (comparison_table(runs, "base-to-novel, mean over seeds") + "\n" + "\n".join(lines) + "\n\n"
             + settings_note(changed) + "\n")
    print(table)
    if args.out:
        atomic_write_text(args.out, table)
    return table


if __name__ == "__main__":
    run_tool(main)
