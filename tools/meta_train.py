"""GRAM meta-training: a prompt initialisation and a gradient regulator for one learner, from unlabelled pairs.

    python tools/meta_train.py configs/gram/meta_coop_toy.py
    python tools/meta_train.py configs/gram/meta_maple_cc3m.py --cfg-options pairs.path=/data/cc3m/{00000..00331}.tar

GRAM (Li et al., ICCV 2023) is reimplemented from the paper (there is no official code); its open design
choices are the config's settings (README, "GRAM"). One streaming pass embeds the pairs with the frozen
CLIP (cached in the work dir), a cross-modal hierarchical clustering makes domains and pseudo-classes,
and the bi-level meta-training runs with a progress bar, saving a resumable state every
``meta.checkpoint_interval`` steps: run the same command again after an interruption to continue
(``--restart`` starts over). Writes ``<work-dir>/gram.safetensors`` (default work dir
``work_dirs/gram/<config name>``), which the configs of ``configs/gram/<learner>/`` start from. The run
holds the work dir's lock throughout: a second run into the same work dir stops at once, naming the pid
that holds it (two runs there would interleave their states, and one result would be lost).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlprompt.cli import HelpFormatter, add_cfg_options, add_debug_argument, cfg_options, run_tool


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("config", help="a meta-training config (configs/gram/meta_*.py)")
    parser.add_argument("--work-dir", help="default: work_dirs/gram/<config name>")
    parser.add_argument("--restart", action="store_true", help="ignore a saved state and start over")
    add_cfg_options(parser)
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    from vlprompt.cli import config_argument

    args.config = config_argument(args.config)  # a mistyped path is answered before torch is imported
    return args


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    from tqdm import tqdm

    from vlprompt.engine import load_config
    from vlprompt.meta.gram import MetaSettings
    from vlprompt.meta.run import meta_config, meta_train, resolve_downstream

    cfg = resolve_downstream(load_config(args.config, None, cfg_options(args.cfg_options)))
    plain = meta_config(cfg)  # every section checked before anything is read
    work_dir = Path(args.work_dir or Path("work_dirs/gram") / Path(args.config).stem)
    total = MetaSettings(**(plain["meta"] or {})).iterations
    pairs_bar = bar = None

    def on_pairs(n: int) -> None:
        nonlocal pairs_bar
        if pairs_bar is None:
            pairs_bar = tqdm(unit="pair", desc="embedding pairs", dynamic_ncols=True)
        pairs_bar.update(n)

    def on_step(record: dict) -> None:
        nonlocal bar
        if bar is None:
            if pairs_bar is not None:
                pairs_bar.close()
            bar = tqdm(total=total, initial=record["iteration"] - 1, unit="step", desc="meta-training",
                       dynamic_ncols=True)
        bar.update(1)
        bar.set_postfix_str(f"support {record['support_loss']:.3f} outer {record['outer_loss']:.3f}")

    path = meta_train(cfg, work_dir, resume=not args.restart, on_step=on_step, on_pairs=on_pairs,
                      log=tqdm.write, config_name=str(args.config))
    for progress in (pairs_bar, bar):
        if progress is not None:
            progress.close()
    print(path)
    return str(path)


if __name__ == "__main__":
    run_tool(main)
