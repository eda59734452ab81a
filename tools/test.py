"""Evaluate a trained prompt learner on a config's test split.

    python tools/test.py configs/coop/toy_shapes.py work_dirs/toy_shapes/epoch_50.pth --subsample novel
    python tools/test.py CONFIG work_dirs/run/learned.safetensors --out results_novel.json

The checkpoint may be an mmengine checkpoint (``epoch_N.pth``) or ``learned.safetensors``; both
load without executing code. ``--subsample`` picks the base or novel half of the classes (or all),
each evaluated as its own task. Prints ``<config>: top-1 xx.xx on the <subsample> classes of
<dataset> (results: <path>)`` and writes the metrics to ``<work dir>/test_<subsample>.json``
(``--out`` chooses another path; a training run's ``results.json`` beside it is left alone).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlprompt.cli import (
    HelpFormatter,
    add_cfg_options,
    add_debug_argument,
    add_verbose_argument,
    cfg_options,
    run_tool,
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("config")
    parser.add_argument("checkpoint", help="epoch_N.pth, learned.safetensors, or 'none' (zero-shot CLIP)")
    parser.add_argument("--subsample", choices=["base", "novel", "new", "all"], default=None)
    parser.add_argument("--out", type=Path, default=None,
                        help="write the metrics as JSON here (default: <work dir>/test_<subsample>.json)")
    parser.add_argument("--work-dir", default=None)
    add_cfg_options(parser)
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    add_verbose_argument(parser)
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    from vlprompt.cli import config_argument

    args.config = config_argument(args.config)  # a mistyped path is answered before torch is imported
    from mmengine.dist import is_main_process

    from vlprompt.backbones.checkpoint import CheckpointError
    from vlprompt.engine import evaluate, load_config
    from vlprompt.engine.results import write_results
    from vlprompt.progress import set_verbose

    set_verbose(args.verbose)
    cfg = load_config(args.config, args.work_dir, cfg_options(args.cfg_options))
    checkpoint = None if args.checkpoint == "none" else Path(args.checkpoint)
    if checkpoint is not None and not checkpoint.is_file():
        what = "is a folder, not a file" if checkpoint.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint not found: {checkpoint} {what} (give an epoch_N.pth or "
                              "learned.safetensors from a work dir, or 'none' for zero-shot CLIP)")
    metrics, model = evaluate(cfg, checkpoint, args.subsample, launcher=args.launcher, announce=True)
    if args.subsample:
        cfg.test_dataloader.dataset.subsample = args.subsample
    task = cfg.test_dataloader.dataset.get("subsample", "all")
    out = args.out or Path(cfg.work_dir) / f"test_{task}.json"
    if is_main_process():
        write_results(out, metrics, cfg, model, checkpoint=str(checkpoint) if checkpoint else None)
        top1 = next(v for k, v in metrics.items() if k.endswith("/top1"))
        print(f"\n{Path(cfg.filename).stem}: top-1 {top1:.2f} on the {task} classes of "
              f"{cfg.test_dataloader.dataset.get('name')}  (results: {out})")
    return metrics


if __name__ == "__main__":
    run_tool(main)
