"""Generate the bundled toy-world datasets into the cache (or --root) with a progress bar.

    python tools/make_toy_world.py                       # all datasets into ~/.cache/vlprompt/toyworld
    python tools/make_toy_world.py --root data/toy --datasets toy-shapes toy-patterns --force

Datasets already complete with the same parameters are reused unless --force is given.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from vlprompt.cli import HelpFormatter, add_debug_argument, run_tool  # noqa: E402
from vlprompt.toyworld import (  # noqa: E402
    DEFAULT_SEED,
    TOY_ALL,
    dataset_size,
    ensure_toy_dataset,
    generate_dataset,
    toy_root,
)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, generate the requested datasets, print where they are and the time taken."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--root", default=None, help="output folder (default: $VLPROMPT_CACHE/toyworld "
                    "or ~/.cache/vlprompt/toyworld)")
    ap.add_argument("--datasets", nargs="+", default=list(TOY_ALL), choices=list(TOY_ALL), metavar="NAME",
                    help=f"datasets to generate (default: all of {', '.join(TOY_ALL)})")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--force", action="store_true", help="regenerate even if a complete copy exists")
    add_debug_argument(ap)
    args = ap.parse_args(argv)

    root = toy_root(args.root)
    t0 = time.perf_counter()
    total = sum(dataset_size(n) for n in args.datasets)
    done = []
    with tqdm(total=total, unit="img", desc="toy world") as bar:
        for name in args.datasets:
            bar.set_postfix_str(name)
            written = [0]

            def tick(k: int, written: list[int] = written) -> None:
                written[0] += k
                bar.update(k)

            if args.force:
                path = generate_dataset(name, root / name, args.seed, progress=tick)
            else:
                path = ensure_toy_dataset(name, root, seed=args.seed, progress=tick)
            reused = written[0] == 0
            if reused:
                bar.update(dataset_size(name))
            done.append((name, path, reused))
    dt = time.perf_counter() - t0
    for name, path, reused in done:
        print(f"{name:20s} {dataset_size(name):6d} images  {'reused' if reused else 'written'}  {path}")
    print(f"{len(done)} datasets in {root} ({dt:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main))
