"""Few-shot sweep over all classes: K shots per class for K in --shots, datasets x seeds.

    python tools/fewshot.py --method coop --datasets toy-shapes --shots 1 2 4 8 16 --seeds 1 2 3
    python tools/fewshot.py --method coop --datasets all --data-root /data

Each run trains the method's config on all classes with K shots and tests on all classes. The
number of epochs per shot count follows CoOp's few-shot recipe (``--epochs`` overrides): 50 for
1 shot, 100 for 2 and 4 shots, 200 for 8 and 16 shots (ImageNet: 50 for every K); a toy dataset
keeps its config's own shortened schedule (``train_cfg.max_epochs`` of configs/<method>/toy_*.py).
Runs live in ``<work-root>/<method>/<dataset>/shots<K>/seed<S>/``; finished ones are reused when
their recorded config matches (a mismatch stops the sweep before anything trains; ``--overwrite``
retrains). Zero-shot CLIP on the same test split (``configs/zsclip/<dataset>.py``, seconds) is the
reference, in ``<work-root>/<method>/<dataset>/zero_shot/``. Writes ``fewshot.md``, ``fewshot.csv``
and an accuracy-vs-shots ``fewshot.png`` with the zero-shot accuracy as a dashed line; each names
the settings the runs changed from the shipped configs (``--cfg-options``, ``--epochs``).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from vlprompt.cli import HelpFormatter, add_sweep_arguments, run_tool, sweep_options
from vlprompt.launch import launch_settings

if TYPE_CHECKING:  # vlprompt.evaluation (torch, mmengine) is imported after the arguments are parsed
    from vlprompt.runs import SweepRun

def run_one(method: str, dataset: str, shots: int, seed: int, run: SweepRun) -> dict:
    """Train on K shots of every class and test on every class; returns the run's result."""
    from vlprompt.runs import TRAIN_RESUME, read_accuracy, run_logged

    run_dir = run.run_dir.resolve()  # the command runs in the repository root
    run_logged([sys.executable, "tools/train.py", str(run.config_file), "--work-dir", str(run_dir),
                TRAIN_RESUME, "--cfg-options", *run.options], run_dir / "sweep.log")
    top1, ece = read_accuracy(run_dir / "results.json")
    return {"method": method, "dataset": dataset, "shots": shots, "seed": seed, "top1": top1, "ece": ece}


def zero_shot_run(dataset: str, out_dir: Path, options: list[str]) -> SweepRun | None:
    """The zero-shot CLIP reference run on ``dataset``'s test split, all classes (``None``: no zsclip config)."""
    from vlprompt.engine.compose import config_exists
    from vlprompt.engine.sweep import REPO_ROOT, zero_shot_options
    from vlprompt.runs import SweepRun

    config = REPO_ROOT / "configs" / "zsclip" / f"{dataset.replace('-', '_')}.py"
    if not config_exists(config):
        print(f"no zero-shot reference for {dataset}: {config} does not exist", file=sys.stderr)
        return None
    return SweepRun(out_dir / dataset / "zero_shot", config,
                    [*zero_shot_options(options), "test_dataloader.dataset.subsample=all"])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--method", required=True)
    parser.add_argument("--datasets", nargs="+", default=["all"])
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=None, help="override the per-shot schedule")
    add_sweep_arguments(parser, "work_dirs/fewshot")
    args = parser.parse_args(argv)
    launch = launch_settings(args)  # values no launcher can use: one line, before any work
    from vlprompt.cli import dataset_arguments, method_argument

    args.method = method_argument(args.method)  # one name per method and dataset: one run folder, one table row
    if args.datasets != ["all"]:
        args.datasets = dataset_arguments(args.datasets)

    from tqdm import tqdm

    from vlprompt.datasets import BASE2NOVEL_DATASETS
    from vlprompt.engine.sweep import config_path, fewshot_run, run_sweep, zero_shot_reference
    from vlprompt.evaluation.report import write_fewshot_report

    datasets = list(BASE2NOVEL_DATASETS) if args.datasets == ["all"] else args.datasets
    for dataset in datasets:
        config_path(args.method, dataset)
    options = sweep_options(args)
    out_dir = args.work_root / args.method
    jobs = [(d, k, s, fewshot_run(args.method, d, k, s, out_dir / d / f"shots{k}" / f"seed{s}", options, args.epochs))
            for d in datasets for k in args.shots for s in args.seeds]
    references = {d: zero_shot_run(d, out_dir, options) for d in datasets}
    done = run_sweep(jobs, partial(run_one, args.method), args.overwrite, f"{args.method} few-shot",
                     lambda dataset, shots, seed, _: f"{dataset} {shots}-shot seed {seed}",
                     lambda r: f"top-1 {r['top1']:.2f}",
                     launch=launch, references=[r for r in references.values() if r is not None])
    runs = [result for result, _ in done]
    out_dir.mkdir(parents=True, exist_ok=True)
    zero_shot = {d: None if r is None else zero_shot_reference(r)["top1"]
                 for d, r in tqdm(references.items(), desc="zero-shot reference")}
    print(write_fewshot_report(runs, out_dir, args.method, zero_shot), end="")
    return runs


if __name__ == "__main__":
    run_tool(main)
