"""Pretrain the tiny CLIP on generated toy-world image-caption pairs.

    python tools/pretrain_toy_clip.py                       # writes vlprompt/weights/toy_clip.safetensors
    python tools/pretrain_toy_clip.py --steps 200 --out /tmp/toy.safetensors
    python tools/pretrain_toy_clip.py --recipe toy-teacher  # writes vlprompt/weights/toy_teacher.safetensors

The shipped checkpoint was made by the first command (13.1 minutes on the quiet 2-core build
machine). The loss log goes to ``<out>.log.jsonl`` beside the checkpoint. The architecture (a 4-layer
ViT with a convolutional stem) and the recipe (contrastive loss plus attribute heads on the image
features, patterns named in few captions) are what gives the tiny CLIP both a usable zero-shot
accuracy and room for prompt learning to improve on it; see ``vlprompt/toyworld/pretrain.py``.
The shipped ``toy-teacher`` checkpoint (RLCF's reward model: the same architecture, its own seed and
mostly shifted-domain images) was made by the third command (23.5 minutes on 2 quiet CPU cores).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from vlprompt.cli import HelpFormatter, add_debug_argument, run_tool

#: the options that set a field of PretrainConfig; unset ones keep the recipe's default
RECIPE_FIELDS = ("arch", "steps", "batch_size", "lr", "warmup_steps", "seed", "max_minutes", "aux_weight")
#: the keys of vlprompt.toyworld.pretrain.RECIPES (kept here so --help needs no torch import)
RECIPE_NAMES = ("toy", "toy-teacher")


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, pretrain, write the checkpoint and its loss log."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter,
                                     epilog="Unset recipe options keep PretrainConfig's defaults "
                                            "(vlprompt/toyworld/pretrain.py).")
    parser.add_argument("--recipe", default="toy", choices=RECIPE_NAMES,
                        help="the named recipe whose defaults the options below override (default: toy)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: the recipe's packaged file in vlprompt/weights/ (toy_clip.safetensors "
                             "for toy)")
    parser.add_argument("--arch", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--warmup-steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--aux-weight", type=float, default=None,
                        help="weight of the attribute heads' loss (0: contrastive loss only)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop early after this long")
    parser.add_argument("--workers", type=int, default=1, help="processes that generate pairs")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    from tqdm import tqdm

    from vlprompt.backbones.archs import WEIGHTS_DIR, get_arch
    from vlprompt.io import atomic_write_text
    from vlprompt.toyworld.pretrain import RECIPES, pretrain_clip, save_pretrained

    cfg = replace(RECIPES[args.recipe], **{k: getattr(args, k) for k in RECIPE_FIELDS if getattr(args, k) is not None})
    if args.out is None:
        args.out = WEIGHTS_DIR / get_arch(cfg.arch).local_weights[args.recipe]
    print(json.dumps(asdict(cfg)))
    log_path = args.out.with_name(args.out.name + ".log.jsonl")
    start = time.perf_counter()
    with tqdm(total=cfg.steps, desc="pretraining", unit="step") as bar:

        def progress(step: int, loss: float) -> None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")

        clip, log = pretrain_clip(cfg, progress=progress, num_workers=args.workers)
    minutes = (time.perf_counter() - start) / 60
    log.append({"total_minutes": round(minutes, 2), "pairs_seen": cfg.batch_size * cfg.steps})
    path = save_pretrained(clip, args.out, cfg, log)
    atomic_write_text(log_path, "".join(json.dumps(row) + "\n" for row in log))
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) after {minutes:.1f} min; loss log: {log_path}")


if __name__ == "__main__":
    run_tool(main)
