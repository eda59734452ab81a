"""Generate the bundled toy-world datasets into the cache (or --root) with a progress bar.

    python tools/make_toy_world.py                       # all datasets into ~/.cache/vlprompt/toyworld
    python tools/make_toy_world.py --root data/toy --datasets toy-shapes toy-patterns --force
    python tools/make_toy_world.py --as-folder demo        # toy-shapes as plain folders of PNG files

Datasets already complete with the same parameters are reused unless --force is given. ``--as-folder DIR``
writes one toy dataset the way your own images would be (the "your own images" walk-through of the README):
``DIR/photos/<class>/*.png`` (``--per-class`` images of each class) and ``DIR/new_photos/*.png``,
``--held-out`` test images of each class under names that do not tell their class, with their classes in
``DIR/new_photos.csv``.
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
    ap.add_argument("--as-folder", metavar="DIR", help="write one dataset (--datasets, default toy-hues) as class "
                    "folders of PNG files in DIR/photos, and held-out images in DIR/new_photos")
    ap.add_argument("--per-class", type=int, default=32, help="--as-folder: images per class in DIR/photos (a "
                    "run's split of them gives half to train)")
    ap.add_argument("--held-out", type=int, default=2, help="--as-folder: held-out images per class")
    add_debug_argument(ap)
    args = ap.parse_args(argv)
    if args.as_folder:
        names = args.datasets if args.datasets != list(TOY_ALL) else ["toy-hues"]
        if len(names) != 1:
            ap.error("--as-folder writes one dataset: give one name with --datasets")
        if args.per_class < 1 or args.held_out < 1:
            ap.error("--per-class and --held-out must be at least 1")
        return write_as_folder(names[0], Path(args.as_folder), args.per_class, args.held_out, args.seed, args.root)

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


def write_as_folder(name: str, out: Path, per_class: int, held_out: int, seed: int, root: str | None) -> int:
    """The toy dataset ``name`` as a user's folder: ``out/photos/<class>/`` and ``out/new_photos`` (see the module)."""
    import csv
    import io
    import random
    import shutil

    from vlprompt.cli import UsageError
    from vlprompt.datasets import build_dataset
    from vlprompt.io import atomic_write_text

    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--as-folder {out}: the folder is not empty; give a new or empty folder")
    t0 = time.perf_counter()
    ensure_toy_dataset(name, toy_root(root), seed=seed)
    source = build_dataset(name, data_root=root, split="train", transform=None, progress=False)
    test = source.with_split("test", transform=None)
    by_class: dict[str, list[str]] = {}
    for item in source.items:
        by_class.setdefault(item.classname, []).append(item.impath)
    chosen = [(c.replace(" ", "_"), p) for c, paths in by_class.items() for p in paths[:per_class]]
    held: dict[str, list[str]] = {}
    for item in test.items:
        held.setdefault(item.classname, []).append(item.impath)
    new = [(c, p) for c, paths in held.items() for p in paths[:held_out]]
    random.Random(seed).shuffle(new)
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["path", "label"])
    with tqdm(total=len(chosen) + len(new), unit="img", desc=f"{name} as folders") as bar:
        for folder, path in chosen:
            target = out / "photos" / folder / Path(path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            bar.update()
        for i, (classname, path) in enumerate(new):
            target = out / "new_photos" / f"photo_{i:04d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            writer.writerow([f"new_photos/{target.name}", classname])
            bar.update()
    atomic_write_text(out / "new_photos.csv", rows.getvalue())
    print(f"{len(chosen)} images of {len(by_class)} classes in {out / 'photos'}; {len(new)} held-out images in "
          f"{out / 'new_photos'} (their classes: {out / 'new_photos.csv'}) ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main))
