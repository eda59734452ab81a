"""Train a prompt learner from a config, then evaluate the last-epoch model on the test split.

    python tools/train.py configs/coop/toy_shapes.py
    python tools/train.py --method maple --dataset dtd                  # = configs/maple/dtd.py, composed
    python tools/train.py configs/maple/imagenet.py --work-dir work_dirs/maple_in --cfg-options randomness.seed=2
    torchrun --nproc_per_node 2 tools/train.py CONFIG --launcher pytorch

Writes mmengine's logs and checkpoints to the work dir (default ``work_dirs/<method>/<dataset>``),
``learned.safetensors`` (the learned parameters and what is needed to rebuild the model) and
``results.json`` (the test metrics). A work dir that holds a run is refused, naming it: ``--resume``
continues an unfinished run of the same config and settings, ``--overwrite`` replaces what is there.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from vlprompt.cli import (
    HelpFormatter,
    add_cfg_options,
    add_debug_argument,
    add_run_selection,
    add_verbose_argument,
    cfg_options,
    run_selection,
    run_tool,
)

if TYPE_CHECKING:  # torch, mmengine and vlprompt.engine are imported after the arguments are parsed
    from mmengine.config import Config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_run_selection(parser)
    parser.add_argument("--work-dir", help="where logs and checkpoints go (default: work_dirs/<method>/<dataset>, "
                                           "e.g. work_dirs/gram/coop/toy_hues: one folder per run)")
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="resume from CKPT, or from the work dir's last checkpoint when no path is given")
    parser.add_argument("--overwrite", action="store_true",
                        help="train afresh into a work dir that holds a run, removing its checkpoints and results "
                             "(without it such a work dir is refused: --resume continues an unfinished run)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (bf16 where supported, else fp16) on GPU")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write TensorBoard events to <work dir>/<timestamp>/vis_data (the config's "
                             'tensorboard=True; needs pip install -e ".[tensorboard]")')
    add_cfg_options(parser)
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    parser.add_argument("--no-test", action="store_true", help="skip the evaluation after training")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0)
    add_verbose_argument(parser)
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    args.config, args.overlays = run_selection(args, parser)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def enable_amp(cfg: Config) -> None:
    """Autocast on GPU with the learnable parameters kept in fp32; CPU stays fp32."""
    import torch

    if not torch.cuda.is_available():
        print("--amp: no GPU, training in fp32 (bf16 autocast is slower than fp32 on this CPU)")
        return
    dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    cfg.optim_wrapper.type = "AmpOptimWrapper"
    cfg.optim_wrapper.dtype = dtype
    if dtype == "float16":
        cfg.optim_wrapper.loss_scale = "dynamic"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.resume and args.overwrite:
        raise SystemExit("--resume continues the run in the work dir, --overwrite replaces it: give one of them")
    from vlprompt.engine import build_runner, load_config
    from vlprompt.engine.checkpoint import claim_work_dir, mark_run_finished
    from vlprompt.engine.config import plain_config, run_name
    from vlprompt.engine.runner import announce_run
    from vlprompt.errors import hint_on_interrupt
    from vlprompt.progress import set_verbose
    from vlprompt.workdir import global_rank, work_dir_lock

    set_verbose(args.verbose)
    cfg = load_config(args.config, args.work_dir, cfg_options(args.cfg_options), overlays=args.overlays)
    settings = plain_config(cfg)  # as configured, before --resume, --amp and --no-test change the run
    if args.amp:
        enable_amp(cfg)
    if args.tensorboard:
        cfg.tensorboard = True
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    if args.no_test:  # nothing will be tested: do not build (and check) the test split for nothing
        cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    main_process = global_rank(args.launcher) == 0
    with work_dir_lock(cfg.work_dir, launcher=args.launcher):  # one process at a time trains into a work dir
        if main_process:  # refuse to mix two runs in one folder, before anything is built
            claim_work_dir(cfg.work_dir, name=run_name(cfg.filename, args.overlays), config_file=cfg.filename,
                           settings=settings, model_cfg=cfg.model, resume=bool(args.resume),
                           overwrite=args.overwrite)
        resume_hint = (f"{cfg.work_dir} holds the unfinished run: add --resume to the same command to continue "
                       "from its last checkpoint, or --overwrite to start over")
        with hint_on_interrupt(resume_hint):
            runner = build_runner(cfg, launcher=args.launcher)
            announce_run(runner)
            runner.train()
            metrics = {} if cfg.get("test_dataloader") is None else test_after_training(cfg, args.launcher)
        if main_process:
            mark_run_finished(cfg.work_dir)
        return metrics


def test_after_training(cfg: Config, launcher: str) -> dict:
    """Evaluate the last-epoch model; a base-to-novel run is tested on base and on novel classes."""
    from mmengine.dist import is_main_process

    from vlprompt.engine import LEARNED_FILE, evaluate
    from vlprompt.engine.results import write_results
    from vlprompt.tables import harmonic_mean

    learned = Path(cfg.work_dir) / LEARNED_FILE
    subsample = cfg.test_dataloader.dataset.get("subsample", "all")
    if (cfg.get("protocol") or {}).get("name") == "base2novel" and subsample == "base":
        base, model = evaluate(cfg, learned, "base", launcher)
        novel, _ = evaluate(cfg, learned, "novel", launcher)
        metrics = {**{f"base/{k.split('/')[-1]}": v for k, v in base.items()},
                   **{f"novel/{k.split('/')[-1]}": v for k, v in novel.items()}}
        metrics["hm"] = harmonic_mean(metrics["base/top1"], metrics["novel/top1"])
        summary = (f"base {metrics['base/top1']:.2f}  novel {metrics['novel/top1']:.2f}  "
                   f"HM {metrics['hm']:.2f}")
    else:
        metrics, model = evaluate(cfg, learned, None, launcher)
        summary = f"top-1 {metrics['accuracy/top1']:.2f}"
    if is_main_process():
        write_results(Path(cfg.work_dir) / "results.json", metrics, cfg, model)
        print(f"\n{Path(cfg.filename).stem}: {summary}  (results: {Path(cfg.work_dir) / 'results.json'})")
    return metrics


if __name__ == "__main__":
    run_tool(main)
