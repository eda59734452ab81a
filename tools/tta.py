"""Test-time adaptation (TPT, C-TPT, RLCF; ZERO and MTA, which tune nothing; TDA, BoostAdapter and DMN-ZS,
which keep caches of the test stream): per test sample, from its views.

    python tools/tta.py configs/tpt/toy_shapes_noise.py --limit 100
    python tools/tta.py configs/zero/toy_shapes_noise.py configs/mta/toy_shapes_noise.py --work-dir work_dirs/tta/free
    python tools/tta.py configs/tda/toy_shapes_noise.py configs/dmn/toy_shapes_noise.py --stream-seeds 1 2 3
    python tools/tta.py configs/rlcf/imagenet_a.py --checkpoint work_dirs/coop/imagenet_xd/learned.safetensors
    python tools/tta.py configs/tpt/toy_shapes_noise.py configs/tpt/toy_shapes_night.py --work-dir work_dirs/tta/tpt
    python tools/tta.py configs/tpt/imagenet.py --datasets imagenet-a imagenet-r imagenet-v2 imagenet-sketch
    python tools/tta.py configs/tpt/imagenet.py --datasets imagenet-a imagenet-r --launcher slurm --partition gpu
    torchrun --nproc_per_node 2 tools/tta.py CONFIG --launcher pytorch

For each config (and each of ``--datasets``, which replace the config's test dataset) the test split is built
as the engine builds it, and the learner is the config's ``model.learner`` on its backbone (the zero-shot
CoOp-style prompt: 4 context tokens from "a photo of a"), or ``--checkpoint``'s trained learner (its own
backbone; its class names are replaced by the test set's). The config's ``adapter=dict(type='tpt'|'rlcf',
...)`` then tunes that learner's text context (or, ``variant='image'``, a copy of the image tower) on each
sample's views (``views=dict(n_views=..., augmix=...)``, seeded per sample) and predicts view 0;
``adapter=dict(type='zero'|'mta')`` reads the prediction from the views' features
(:mod:`vlprompt.adapters.training_free`); ``adapter=dict(type='tda'|'boostadapter'|'dmn')`` also keeps a cache
of the stream, whose samples then come in a shuffle seeded by ``stream.seed`` (``--stream-seeds`` runs several
orders and tabulates their spread). ``--cfg-options adapter.steps=0`` predicts without adapting (the
zero-shot reference on the same views and samples).

Writes ``results.json`` (top-1, ECE over 15 bins, seconds per sample, peak memory) and ``reliability.png``
to each run's work dir (default ``work_dirs/<method>/<config name>``, with ``_<dataset>`` for ``--datasets``);
with several runs,
``--work-dir`` is their root and ``tta.md`` / ``tta.csv`` there (default ``work_dirs/tta/``) tabulate
them. ``--launcher pytorch`` under torchrun shards the test set (rank r takes samples r, r + world,
...) and gathers the predictions; each sample's views depend only on its index and the seed, so
the accuracy does not depend on the process count. ``--launcher local`` (``--jobs N`` at once, each on
its own GPU when there are GPUs) and ``--launcher slurm`` run each config and dataset as its own job
(:mod:`vlprompt.launch`): the same run folders and results, a finished run with the same config, checkpoint
and ``--limit`` reused, a failed one named with its log while the others finish. ``--limit N`` keeps N
samples, drawn with the config's seed (the same samples for every method).

Each prediction is recorded as it is made (``tta_predictions.jsonl`` in the run's work dir, with the
settings that shape it): a run stopped by a kill, Ctrl-C or a full disk goes on from the recorded
samples when the same command is run again (under other settings it is refused, naming them), and
ends with the results of an uninterrupted run. A full disk stops it with one line naming the file
and the space left.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlprompt.cli import HelpFormatter, add_cfg_options, add_debug_argument, cfg_options, run_tool

if TYPE_CHECKING:
    from vlprompt.runs import SweepRun

# torch, mmengine and vlprompt.engine are imported after the arguments are parsed; the loop itself is
# vlprompt.adapters.run (this tool keeps the arguments and the table)

TABLE_ROOT = Path("work_dirs/tta")
"""Where the table of several runs goes when no ``--work-dir`` is given."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("configs", nargs="+", metavar="CONFIG", help="configs/tpt/*.py, configs/rlcf/*.py")
    parser.add_argument("--checkpoint", help="a trained learner (work_dirs/.../learned.safetensors) whose text "
                                             "context is adapted (default: zero-shot 'a photo of a')")
    parser.add_argument("--datasets", nargs="+", default=None,
                        help="test on these datasets instead of each config's (one run per config and dataset)")
    parser.add_argument("--work-dir", help="the run's work dir; with several runs, the root of theirs and of the table")
    add_cfg_options(parser)
    parser.add_argument("--limit", type=int, default=None, help="test on N samples of each test set (seeded draw)")
    parser.add_argument("--stream-seeds", nargs="+", type=int, default=None, metavar="SEED",
                        help="run each adapter that keeps state across samples (TDA, DMN, BoostAdapter) once per "
                             "stream order (stream.seed); the table gives their mean and spread")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available, else cpu)")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0)
    add_debug_argument(parser)
    from vlprompt.launch import add_launcher_arguments  # the standard library only

    add_launcher_arguments(parser, {"none": "the runs one after another in this process",
                                    "pytorch": "under torchrun: each run's test set shared out over the processes"})
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    from vlprompt.cli import config_argument, dataset_arguments, device_argument

    args.configs = [config_argument(c) for c in args.configs]  # checked before torch is imported
    if args.datasets is not None:  # one name per dataset: one run folder and one table row each
        args.datasets = dataset_arguments(args.datasets)
    args.device = device_argument(args.device)  # a device this machine lacks: one line, before any work
    return args


# ------------------------------------------------------------------------------------------ table
def write_table(rows: list[dict[str, Any]], out_dir: Path, settings: list[str] | None = None
                ) -> tuple[str, dict[str, Path]]:
    """``tta.md`` and ``tta.csv`` in ``out_dir``: one line per run (top-1, ECE in %, seconds per sample, peak
    memory); for a method run over several stream orders (``--stream-seeds``), their mean ± standard deviation on
    each dataset; and each method's means over the datasets it ran on (when it ran on more than one). The best
    top-1 of each dataset (and of the averages) is bold; ``settings`` (the ``--cfg-options``) are named under the
    table and in the CSV's ``settings`` column."""
    import statistics

    from vlprompt.tables import bold_best, markdown_table, write_tables

    orders = any(r.get("stream_seed") is not None for r in rows)

    def line(method: str, dataset: str, samples: str, views: Any, stream: Any, top1: str, ece: str, sec: str,
             memory: str) -> list[Any]:
        return [method, dataset, samples, views, *([stream] if orders else []), top1, ece, sec, memory]

    def spread(values: list[float]) -> str:
        return f"{statistics.fmean(values):.2f} ± {statistics.pstdev(values):.2f}"

    md = [line(r["method"], r["dataset"], f"{r['samples']} / {r['of']}", r["views"],
               "" if r.get("stream_seed") is None else r["stream_seed"], f"{r['top1']:.2f}", _number(r.get("ece")),
               f"{r['sec_per_sample']:.3f}", _number(r.get("peak_memory_mb"), 0)) for r in rows]
    top1_column = 5 if orders else 4
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["dataset"]), []).append(r)
    for (method, dataset), mine in groups.items():
        if len(mine) > 1 and all(r.get("stream_seed") is not None for r in mine):
            eces = [r["ece"] for r in mine if r.get("ece") is not None]
            md.append(line(method, dataset, "", "", f"mean ± std ({len(mine)})", spread([r["top1"] for r in mine]),
                           spread(eces) if len(eces) == len(mine) else "",
                           f"{statistics.fmean(r['sec_per_sample'] for r in mine):.3f}", ""))
    singles = len(md)
    for m in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == m]
        if len({r["dataset"] for r in mine}) > 1:
            top1 = statistics.fmean(r["top1"] for r in mine)
            sec = statistics.fmean(r["sec_per_sample"] for r in mine)
            eces = [r["ece"] for r in mine if r.get("ece") is not None]
            ece = _number(statistics.fmean(eces)) if len(eces) == len(mine) else ""
            md.append(line(m, f"average ({len({r['dataset'] for r in mine})})", "", "", "", f"{top1:.2f}", ece,
                           f"{sec:.3f}", ""))
    by_dataset: dict[str, list[tuple[int, int]]] = {}  # the methods on one dataset (or their averages) compete
    for i, cells in enumerate(md):
        if i < len(rows) and rows[i].get("stream_seed") is not None and len(groups[rows[i]["method"],
                                                                                   rows[i]["dataset"]]) > 1:
            continue  # one order of several: its group's mean competes
        by_dataset.setdefault("average" if i >= singles else cells[1], []).append((i, top1_column))
    header = ["method", "dataset", "samples", "views", *(["stream order"] if orders else []), "top-1", "ECE",
              "s/sample", "peak MB"]
    text = markdown_table(header, bold_best(md, groups=by_dataset.values()))
    keys = ["method", "dataset", "samples", "of", "classes", "views", "stream_seed", "top1", "ece", "sec_per_sample",
            "peak_memory_mb", "processes", "device", "config", "work_dir"]
    files = write_tables(out_dir, "tta", text, keys,
                         [[f"{r.get(k):.4f}" if isinstance(r.get(k), float) else
                           ("" if r.get(k) is None else r.get(k)) for k in keys] for r in rows], settings)
    return files["md"].read_text(), files


def _number(value: float | None, digits: int = 2) -> str:
    """A table cell: ``value`` with ``digits`` decimals, blank when unknown (a run from before it was measured)."""
    return "" if value is None else f"{value:.{digits}f}"


# ------------------------------------------------------------------------------------------ launched runs
def run_job(config: str, dataset: str | None, tool_args: list[str], run: SweepRun) -> dict[str, Any]:
    """A launched job: this tool on one config (and dataset) in the run's folder; returns the run's table row."""
    import json
    import sys

    from vlprompt.runs import run_logged

    run_dir = run.run_dir.resolve()
    run_logged([sys.executable, "tools/tta.py", config, "--work-dir", str(run_dir),
                *(["--datasets", dataset] if dataset else []), *tool_args], run_dir / "sweep.log")
    return json.loads((run_dir / "results.json").read_text())["row"]


def job_label(config: str, dataset: str | None, options: list[str]) -> str:
    """``<config name>[ on <dataset>][, stream order <seed>]``: a launched run in the sweep's lines."""
    seeds = [o.split("=", 1)[1] for o in options if o.startswith("stream.seed=")]
    return Path(config).stem + (f" on {dataset}" if dataset else "") + (f", stream order {seeds[-1]}" if seeds else "")


def launch_runs(args: argparse.Namespace, jobs: list[tuple[str, str | None, int | None]], cfgs: list,
                checkpoint: Path | None) -> list[dict[str, Any]]:
    """Every config and dataset as its own job of ``--launcher local|slurm``; the rows in order. A finished run
    is reused when its config, checkpoint (by digest) and ``--limit`` are this call's; otherwise it is run again,
    as this tool always does (an interrupted one goes on from its recorded predictions)."""
    from vlprompt.engine.sweep import run_sweep
    from vlprompt.io import file_digest
    from vlprompt.launch import launch_settings
    from vlprompt.runs import SweepRun, work_result

    settings = {"limit": args.limit, "device": args.device,
                "checkpoint": file_digest(checkpoint) if checkpoint is not None else None}
    tool_args = [*(["--limit", str(args.limit)] if args.limit else []), *(["--device", args.device] if args.device
                 else []), *(["--checkpoint", str(checkpoint.resolve())] if checkpoint is not None else [])]

    def job_options(seed: int | None) -> list[str]:
        return [*(args.cfg_options or []), *([f"stream.seed={seed}"] if seed is not None else [])]

    launched = [(str(Path(config).resolve()), dataset,
                 [*tool_args, *(["--cfg-options", *job_options(seed)] if job_options(seed) else [])],
                 SweepRun(Path(cfg.work_dir).resolve(), Path(config), [*job_options(seed), *(
                     [f"test_dataloader.dataset.name={dataset}"] if dataset else [])], settings=settings))
                for (config, dataset, seed), cfg in zip(jobs, cfgs, strict=True)]
    done = run_sweep(launched, run_job, True, "test-time adaptation",
                     lambda config, dataset, _, run: job_label(config, dataset, run.options),
                     lambda row: f"top-1 {row['top1']:.2f} ({row['sec_per_sample']:.3f} s/sample)",
                     launch_settings(args))
    # the config and folder as this call names them (a stored result's "config" is the run's effective config)
    return [{**work_result(result), "config": str(cfg.filename), "work_dir": str(cfg.work_dir)}
            for (result, _), cfg in zip(done, cfgs, strict=True)]


# ------------------------------------------------------------------------------------------ main
def composed_for(config: str, dataset: str | None) -> str:
    """The config of a run on ``dataset``: a composed run (``configs/<method>/<dataset>.py``, no such file) is the
    method's run on ``dataset``, its published recipe for that dataset included; a config file is itself (its
    test set is then replaced)."""
    if dataset is None or Path(config).is_file():
        return config
    return str(Path(config).with_name(dataset.replace("-", "_") + ".py"))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    from vlprompt.adapters.run import run_tta
    from vlprompt.backbones.checkpoint import CheckpointError
    from vlprompt.engine import load_config
    from vlprompt.engine.config import default_work_dir

    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    if checkpoint is not None and not checkpoint.is_file():
        what = "is a folder, not a file" if checkpoint.is_dir() else "does not exist"
        raise CheckpointError(f"--checkpoint {checkpoint} {what} (give a learned.safetensors or epoch_N.pth from a "
                              "work dir, or leave it out for the zero-shot prompt)")
    from vlprompt.adapters.run import keeps_state_of

    options = cfg_options(args.cfg_options)
    jobs, cfgs = [], []
    for config in args.configs:  # every config is read and checked before the first run starts
        for dataset in args.datasets or [None]:
            cfg = load_config(composed_for(config, dataset), None, options)
            if dataset is not None:
                cfg.test_dataloader.dataset.name = dataset
            online = args.stream_seeds and keeps_state_of(cfg.get("adapter") or {})
            for seed in args.stream_seeds if online else [None]:
                jobs.append((config, dataset, seed))
                cfgs.append(cfg if seed is None else cfg.copy())
                if seed is not None:
                    cfgs[-1].stream = dict(seed=seed)
    several = len(jobs) > 1
    run_dirs = [Path(default_work_dir(c) + (f"_{d.replace('-', '_')}" if d else "") +
                     ("" if s is None else f"_stream{s}")) for c, d, s in jobs]
    leaves = [r.name for r in run_dirs]
    for cfg, run_dir in zip(cfgs, run_dirs, strict=True):
        if several:  # under --work-dir by the run's name; by method and name where two methods share a name
            inside = run_dir.name if leaves.count(run_dir.name) == 1 else run_dir.relative_to("work_dirs")
            cfg.work_dir = str(Path(args.work_dir) / inside) if args.work_dir else str(run_dir)
        else:
            cfg.work_dir = args.work_dir or cfg.get("work_dir") or str(run_dir)
    if args.launcher in ("local", "slurm"):
        rows, rank = launch_runs(args, jobs, cfgs, checkpoint), 0
    else:
        rows, rank = run_tta(cfgs, checkpoint, args.limit, "pytorch" if args.launcher == "pytorch" else "none",
                             args.device)
    if several and rank == 0:
        from vlprompt.engine.sweep import option_settings

        settings = option_settings(args.cfg_options or [])  # tta keeps no config record: its options are the changes
        text, files = write_table(rows, Path(args.work_dir) if args.work_dir else TABLE_ROOT, settings)
        print("\n" + text + f"\ntables: {files['md']}, {files['csv']}")
    return rows


if __name__ == "__main__":
    run_tool(main)
