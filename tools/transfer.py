"""Cross-dataset and domain-generalization evaluation: train once on the source, test on targets.

    python tools/transfer.py --method maple --protocol cross-dataset --seeds 1 2 3 --data-root /data
    python tools/transfer.py --method coop --protocol domain-generalization
    python tools/transfer.py --method coop --protocol toy-domain-generalization     # the toy analogue

The source run uses ``configs/<method>/<source>_xd.py`` (all classes, 16 shots); the learned prompts
are then tested on every target with all its classes. Runs live in
``<work-root>/<method>/<protocol>/seed<S>/``; a finished seed is reused when its recorded config
matches (a mismatch stops the sweep before anything trains; ``--overwrite`` retrains), an unfinished
one starts again from training. Writes ``<protocol>.md``
and ``.csv`` with per-target accuracy (mean over seeds) and the published average over targets; the
Markdown table has a zero-shot CLIP row (``configs/zsclip/<target>.py``, else the source's zsclip
config, on each target: seconds, in ``<work-root>/<method>/<protocol>/zero_shot/<target>/``). A
progress bar counts the steps (training, then one test per target) and each seed names its log.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlprompt.cli import OVERWRITE_HELP, HelpFormatter, UsageError, add_sweep_arguments, run_tool, sweep_options
from vlprompt.launch import launch_settings

if TYPE_CHECKING:  # vlprompt.evaluation (torch, mmengine) is imported after the arguments are parsed
    from vlprompt.runs import SweepRun


def sweep_run(protocol, seed: int, run_dir: Path, source_cfg: Path, options: list[str]) -> SweepRun:
    """The source training with ``seed`` in ``run_dir`` (its outputs without a result file: an older sweep's)."""
    from vlprompt.runs import SweepRun

    legacy = ("learned.safetensors", *(f"test_{t.dataset}.json" for t in protocol.targets))
    return SweepRun(run_dir, source_cfg, [f"randomness.seed={seed}", *options], legacy_outputs=legacy)


def target_options(target) -> list[str]:
    """The ``--cfg-options`` that point a config's test split at ``target``."""
    return [f"test_dataloader.dataset.name={target.dataset}", f"test_dataloader.dataset.subsample={target.subsample}",
            f"test_dataloader.dataset.split={target.split}"]


def run_seed(method: str, protocol, seed: int, run: SweepRun, bar: Any = None) -> dict:
    """Train on the source once, test on each target; the result holds ``accuracy``: ``{target: top-1}``.
    ``bar`` (a tqdm) shows the current step and advances after each one."""
    from vlprompt.runs import TRAIN_RESUME, read_top1, run_logged

    def step(label: str, cmd: list[str]) -> None:
        if bar is not None:
            bar.set_postfix_str(f"seed {seed}: {label}")
        run_logged(cmd, run_dir / "sweep.log")
        if bar is not None:
            bar.update()

    run_dir = run.run_dir.resolve()  # the commands run in the repository root
    opts = list(run.options)
    learned = run_dir / "learned.safetensors"
    step(f"training on {protocol.source.dataset}",
         [sys.executable, "tools/train.py", str(run.config_file), "--work-dir", str(run_dir), "--no-test",
          TRAIN_RESUME, "--cfg-options", *opts])
    accuracy = {}
    for target in protocol.targets:
        out = run_dir / f"test_{target.dataset}.json"
        step(f"testing on {target.dataset}",
             [sys.executable, "tools/test.py", str(run.config_file), str(learned), "--work-dir", str(run_dir),
              "--out", str(out), "--cfg-options", *opts, *target_options(target)])
        accuracy[target.dataset] = read_top1(out)
    return {"method": method, "protocol": protocol.name, "seed": seed, "accuracy": accuracy}


def zero_shot_runs(protocol, out_dir: Path, options: list[str]) -> dict[str, SweepRun | None]:
    """Zero-shot CLIP's reference run on each target (``configs/zsclip/<target>.py``, else the source's; ``None``:
    neither exists)."""
    from vlprompt.engine.compose import config_exists
    from vlprompt.engine.sweep import REPO_ROOT, zero_shot_options
    from vlprompt.runs import SweepRun

    found: dict[str, SweepRun | None] = {}
    for target in protocol.targets:
        configs = [REPO_ROOT / "configs" / "zsclip" / f"{d.replace('-', '_')}.py"
                   for d in (target.dataset, protocol.source.dataset)]
        config = next((c for c in configs if config_exists(c)), None)
        found[target.dataset] = None if config is None else SweepRun(
            out_dir / "zero_shot" / target.dataset, config, [*zero_shot_options(options), *target_options(target)])
    return found


def zero_shot_row(references: dict[str, SweepRun | None], bar: Any = None) -> dict[str, float | None]:
    """Zero-shot CLIP's top-1 on each target: its reference run made (or reused, when a launcher made it)."""
    from vlprompt.engine.sweep import zero_shot_reference

    row: dict[str, float | None] = {}
    for target, run in references.items():
        if bar is not None:
            bar.set_postfix_str(f"zero-shot on {target}")
        row[target] = None if run is None else zero_shot_reference(run)["top1"]
        if bar is not None:
            bar.update()
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--method", required=True)
    parser.add_argument("--protocol", default="cross-dataset",
                        help="cross-dataset, domain-generalization or toy-domain-generalization")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--source-config", type=Path, default=None,
                        help="default: configs/<method>/<source dataset>_xd.py")
    add_sweep_arguments(parser, "work_dirs/transfer", overwrite_help=OVERWRITE_HELP.replace("runs", "seeds", 1))
    args = parser.parse_args(argv)
    launch = launch_settings(args)  # values no launcher can use: one line, before any work
    from vlprompt.cli import config_argument, method_argument

    if args.source_config is None:  # the method names the source config: a typo is answered before torch loads
        args.method = method_argument(args.method)
    else:
        args.source_config = Path(config_argument(str(args.source_config)))
    from tqdm import tqdm

    from vlprompt.datasets import get_protocol
    from vlprompt.engine.sweep import REPO_ROOT, plan_runs, run_or_reuse, took
    from vlprompt.evaluation.report import run_settings, seed_options, write_transfer_report

    try:
        protocol = get_protocol(args.protocol)
    except ValueError as err:  # an unknown name: the message lists the known ones
        raise UsageError(f"--protocol {args.protocol}: {err}") from None
    source_cfg = args.source_config or (
        REPO_ROOT / "configs" / args.method / f"{protocol.source.dataset.replace('-', '_')}_xd.py")
    from vlprompt.engine.compose import config_exists

    if not config_exists(source_cfg):
        raise SystemExit(f"no source config for {args.method} under {protocol.name}: {source_cfg} does not exist")
    options = sweep_options(args)
    out_dir = args.work_root / args.method / protocol.name
    runs = {seed: sweep_run(protocol, seed, out_dir / f"seed{seed}", Path(source_cfg), options) for seed in args.seeds}
    plan_runs(list(runs.values()), args.overwrite)  # every seed checked before the first one trains
    per_seed, results = {}, []
    start = time.perf_counter()
    steps = 1 + len(protocol.targets)  # training, then one test per target
    references = zero_shot_runs(protocol, out_dir, options)
    if launch.launcher != "sequential":  # the seeds and the zero-shot runs side by side (vlprompt.launch)
        from vlprompt.engine.sweep import plan_run
        from vlprompt.launch import run_jobs

        jobs = [(seed, runs[seed]) for seed in args.seeds]
        done = run_jobs(jobs, partial(run_seed, args.method, protocol), args.overwrite, launch,
                        f"{args.method} {protocol.name}", lambda seed, _: f"seed {seed}",
                        lambda r: ", ".join(f"{t} {a:.2f}" for t, a in r["accuracy"].items()),
                        [plan_run(r) for r in references.values() if r is not None])
        for (seed, _), (result, _) in zip(jobs, done, strict=True):
            per_seed[seed] = result["accuracy"]
            results.append(result)
        zero_shot = zero_shot_row(references)
        print(write_transfer_report(per_seed, protocol, out_dir, args.method, zero_shot,
                                    run_settings(results, seed_options)))
        print(f"{time.perf_counter() - start:.0f} s; tables in {out_dir}")
        return per_seed
    with tqdm(total=len(args.seeds) * steps + len(protocol.targets), desc=f"{args.method} {protocol.name}",
              unit="step") as bar:
        for seed in args.seeds:
            tqdm.write(f"seed {seed}: log in {runs[seed].run_dir.resolve() / 'sweep.log'}")
            done = bar.n
            result, reused = run_or_reuse(runs[seed], partial(run_seed, args.method, protocol, seed, runs[seed], bar),
                                          args.overwrite)
            bar.update(done + steps - bar.n)  # a reused seed skips its steps
            per_seed[seed] = result["accuracy"]
            results.append(result)
            tqdm.write(f"seed {seed}: " + ", ".join(f"{t} {a:.2f}" for t, a in per_seed[seed].items())
                       + f" ({took(result, reused)})")
        tqdm.write(f"zero-shot CLIP on each target: logs in {(out_dir / 'zero_shot').resolve()}/<target>/sweep.log")
        zero_shot = zero_shot_row(references, bar)
    print(write_transfer_report(per_seed, protocol, out_dir, args.method, zero_shot,
                                run_settings(results, seed_options)))
    print(f"{time.perf_counter() - start:.0f} s; tables in {out_dir}")
    return per_seed


if __name__ == "__main__":
    run_tool(main)
