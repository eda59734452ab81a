"""Active prompt learning (PCB's protocol): samplers x PCB x seeds, then the table and the plot.

    python tools/active.py configs/active/toy_hues.py          # 4 samplers, with and without PCB, seeds 1-3
    python tools/active.py configs/active/dtd.py --samplers badge --pcb on --seeds 1 --cfg-options data_root=/data
    python tools/active.py configs/active/toy_hues.py --report-only   # tables and plot from finished rounds

Each strategy and seed runs the rounds of :mod:`vlprompt.active.loop` in
``<work-root>/<strategy>/seed<S>/`` (``round<r>/`` work dirs and ``active_state.json``); a stopped
sweep started again resumes each run after its last finished round. Writes ``active.md``
(accuracy and class balance per round per strategy), ``active.csv`` and ``active.png`` (accuracy
and balance against the labelled budget, one line per strategy, the seeds' spread as a band) to
the work root (default ``work_dirs/active/<config name>``); each names the settings that differ from
the shipped config (this call's ``--cfg-options`` and ``--rounds``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from vlprompt.cli import HelpFormatter, add_cfg_options, add_debug_argument, cfg_options, run_tool

if TYPE_CHECKING:
    from vlprompt.runs import SweepRun

SAMPLER_NAMES = ("random", "entropy", "coreset", "badge")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("config", help="an active-learning config (configs/active/...)")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLER_NAMES), metavar="NAME",
                        help=f"samplers to run (default: {' '.join(SAMPLER_NAMES)})")
    parser.add_argument("--pcb", choices=("both", "on", "off"), default="both",
                        help="each sampler with PCB (on), without (off), or both")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--rounds", type=int, help="override active.rounds (8)")
    parser.add_argument("--work-root", help="default: work_dirs/active/<config name>")
    parser.add_argument("--report-only", action="store_true", help="write the table and the plot from finished rounds")
    parser.add_argument("--no-report", action="store_true", help="run the rounds and write no table (a launched job)")
    add_cfg_options(parser)
    add_debug_argument(parser)
    from vlprompt.launch import add_launcher_arguments  # the standard library only

    add_launcher_arguments(parser)
    args = parser.parse_args(argv)
    from vlprompt.cli import config_argument

    args.config = config_argument(args.config)  # a mistyped path is answered before torch is imported
    return args


def run_job(config: str, label: str, seed: int, tool_args: list[str], run: SweepRun) -> dict:
    """A launched job: this tool on one strategy and seed (the run's rounds, no table); returns its last round."""
    import json
    import sys

    from vlprompt.runs import run_logged

    run_dir = run.run_dir.resolve()
    sampler, _, pcb = label.partition("+")
    run_logged([sys.executable, "tools/active.py", config, "--samplers", sampler, "--pcb", "on" if pcb else "off",
                "--seeds", str(seed), "--work-root", str(run_dir.parent.parent), "--no-report", *tool_args],
               run_dir / "sweep.log")
    last = json.loads((run_dir / "active_state.json").read_text())["rounds"][-1]
    return {"rounds": last["round"] + 1, "top1": last["top1"], "balance": last["balance"]}


def launch_runs(args: argparse.Namespace, plan: list, root: Path) -> None:
    """Each strategy and seed as its own job of ``--launcher local|slurm`` (:mod:`vlprompt.launch`). A run that
    finished its rounds with this config is reused; any other goes on from its last finished round, as here."""
    from vlprompt.engine.sweep import run_sweep
    from vlprompt.launch import launch_settings
    from vlprompt.runs import SweepRun

    tool_args = [*(["--rounds", str(args.rounds)] if args.rounds else []),
                 *(["--cfg-options", *args.cfg_options] if args.cfg_options else [])]
    options = [*(args.cfg_options or []), *([f"active.rounds={args.rounds}"] if args.rounds else [])]
    config = str(Path(args.config).resolve())
    jobs = [(config, s.label, seed, tool_args, SweepRun(root.resolve() / s.label / f"seed{seed}", Path(config),
                                                        options, settings={"strategy": s.label, "seed": seed}))
            for s in plan for seed in args.seeds]
    run_sweep(jobs, run_job, True, "active runs", lambda _, label, seed, *__: f"{label} seed {seed}",
              lambda r: f"{r['rounds']} rounds, top-1 {r['top1']:.2f}, balance {r['balance']:.3f}",
              launch_settings(args))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from tqdm import tqdm

    from vlprompt.active import ActiveSettings, read_state, run_active
    from vlprompt.active.report import write_report
    from vlprompt.engine import load_config
    from vlprompt.engine.sweep import option_settings

    cfg = load_config(args.config, None, cfg_options(args.cfg_options))
    root = Path(args.work_root or Path("work_dirs/active") / Path(args.config).stem)
    pcb = {"both": (False, True), "on": (True,), "off": (False,)}[args.pcb]
    # every setting is checked before the first round trains
    plan = [ActiveSettings.from_config(cfg.get("active"), sampler=s, pcb=p, rounds=args.rounds)
            for s in args.samplers for p in pcb]
    order = [s.label for s in plan]
    if not args.report_only and args.launcher != "sequential":
        launch_runs(args, plan, root)
    elif not args.report_only:
        total = sum(s.rounds for s in plan) * len(args.seeds)
        done = sum(len((read_state(root / s.label / f"seed{seed}") or {"rounds": []})["rounds"][:s.rounds])
                   for s in plan for seed in args.seeds)
        bar = tqdm(total=total, initial=done, unit="round", desc="active rounds", dynamic_ncols=True)
        for settings in plan:
            for seed in args.seeds:
                bar.set_postfix_str(f"{settings.label} seed {seed}")

                def report(record: dict, label: str = settings.label, seed: int = seed) -> None:
                    bar.update(1)
                    bar.set_postfix_str(f"{label} seed {seed}: round {record['round']} top-1 {record['top1']:.2f}, "
                                        f"balance {record['balance']:.3f}")

                run_active(cfg, root / settings.label / f"seed{seed}", settings, seed=seed, on_round=report)
        bar.close()
    if args.no_report:
        return {}
    settings = option_settings([*(args.cfg_options or []), *([f"active.rounds={args.rounds}"] if args.rounds else [])])
    paths = write_report(root, order, title=f"{Path(args.config).stem}: active prompt learning", settings=settings)
    print(paths["table"].read_text())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    lists = sorted(root.glob("*/seed*/to_label_round*.csv"))
    if lists:
        print(f"images chosen for labelling, a list per round (path,class): {lists[0].parent}/to_label_round<r>.csv "
              f"({len(lists)} lists in all)")
    return {k: str(v) for k, v in paths.items()}


if __name__ == "__main__":
    run_tool(main)
