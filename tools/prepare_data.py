"""Check that a data root holds the benchmarks in the layout vlprompt reads.

    python tools/prepare_data.py verify --data-root /data
    python tools/prepare_data.py verify --data-root /data --datasets dtd eurosat --check-images
    python tools/prepare_data.py verify --data-root /data --datasets dtd --knowledge dtd=/data/dtd_knowledge.tsv
    python tools/prepare_data.py verify --data-root /data --datasets elevater   # ELEVATER's 19 IC tasks
    python tools/prepare_data.py verify --datasets folder:/path/to/images --shots 16   # your own images
    python tools/prepare_data.py verify --datasets folder-photos            # ... by their registered name

For each dataset it prints found / missing / broken, the image counts against the published ones,
and for anything wrong the exact file or folder expected and where to get it; with a class-description
file (``--knowledge``, or ``knowledge.json`` / ``knowledge.tsv`` in a dataset's folder), how many
classes it describes and the first one it misses. Exit status: 0 when every requested dataset is
complete, 1 otherwise, 2 for a usage error. How to lay the datasets out: datasets/README.md.

Your own images (``folder:PATH[?options]`` or the name it was registered under, see
vlprompt/user_datasets.py) need no data root: the folder or list is scanned and EVERY problem is listed at
once (empty class folders, files that are not images, images that do not decode, the same file in train and
test, classes with fewer than --shots training images, class names that clash, bad lines of a list), with
the images per class and split; their images are decoded unless --no-check-images. Nothing is written into
the folder, and a split not yet written is computed in memory, not saved.
"""

from __future__ import annotations

import argparse
import os
import sys

from vlprompt.cli import DATA_ENV, HelpFormatter, add_debug_argument, run_tool


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Check datasets on disk (see datasets/README.md).",
                                     formatter_class=HelpFormatter)
    add_debug_argument(parser)  # before or after the command: run_tool reads it from the command line
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="check that datasets are present and complete",
                            formatter_class=HelpFormatter)
    verify.add_argument("--data-root", default=None, help=f"folder holding the datasets (default: ${DATA_ENV})")
    verify.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                        help='registry names (default: the 16 benchmarks); "all" adds the toy datasets and the '
                             'ELEVATER tasks; "elevater" stands for the ELEVATER tasks (elevater-<task>); '
                             'folder:PATH[?options] or its registered name (folder-<name>) checks your own images '
                             '(no data root needed)')
    verify.add_argument("--check-images", action=argparse.BooleanOptionalAction, default=None,
                        help="decode every image, not only check that it exists (slow on benchmarks); unset: "
                             "off for benchmarks, on for your own folders and lists")
    verify.add_argument("--shots", type=_shots, default=None, metavar="K",
                        help="your own datasets: name each class with fewer than K training images")
    verify.add_argument("--strict", action="store_true", help="also fail when counts differ from the published")
    verify.add_argument("--workers", type=int, default=None, help="threads used to decode images")
    verify.add_argument("--no-progress", action="store_true", help="no progress bars")
    verify.add_argument("--knowledge", nargs="+", default=[], metavar="NAME=FILE",
                        help="class-description files whose coverage to report (default: a knowledge.json / "
                             "knowledge.tsv in the dataset folder)")
    add_debug_argument(verify)
    return parser.parse_args(argv)


def _shots(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of shots (1 or more)")
    return int(text)


def _tolerant_output() -> None:
    """Never fail on printing: characters the terminal's encoding lacks come out as backslash escapes
    (``LANG=C``, ``PYTHONIOENCODING=ascii:strict``); non-UTF-8 file names are escaped by the report."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    _tolerant_output()
    args = parse_args(argv)
    data_root = args.data_root or os.environ.get(DATA_ENV)
    if args.datasets is None and not data_root:  # the benchmarks: before importing the readers
        print(f"error: no data root; pass --data-root or set ${DATA_ENV}", file=sys.stderr)
        return 2
    from vlprompt.datasets import BENCHMARKS, ELEVATER_NAMES, canonical_name, list_datasets
    from vlprompt.datasets.user_verify import format_user_reports, verify_user_dataset
    from vlprompt.datasets.verify import format_reports, verify_dataset
    from vlprompt.user_datasets import user_dataset

    if args.datasets is None:
        names = list(BENCHMARKS)
    elif args.datasets == ["all"]:
        names = list_datasets()
    else:
        try:  # folder:PATH is registered under its one name here (in the cache, never in the folder)
            names = list(dict.fromkeys(m for n in args.datasets for m in (
                ELEVATER_NAMES if n.lower() == "elevater" else (canonical_name(n),))))
        except KeyError as err:
            print(f"error: {err.args[0]}", file=sys.stderr)
            return 2
    user = [n for n in names if user_dataset(n) is not None]
    benchmarks = [n for n in names if n not in user]
    if benchmarks and not data_root:
        print(f"error: no data root for {', '.join(benchmarks)}; pass --data-root or set ${DATA_ENV} (your own "
              "folders, folder:PATH, need none)", file=sys.stderr)
        return 2
    knowledge = {}
    for item in args.knowledge:
        name, sep, path = item.partition("=")
        if not sep or not path:
            print(f"error: --knowledge {item!r} is not NAME=FILE", file=sys.stderr)
            return 2
        try:
            knowledge[canonical_name(name)] = path
        except KeyError as err:
            print(f"error: {err.args[0]}", file=sys.stderr)
            return 2
    check_images = bool(args.check_images)
    reports = [verify_dataset(n, data_root, check_images=check_images, progress=not args.no_progress,
                              workers=args.workers, knowledge=knowledge.get(n)) for n in benchmarks]
    check_user = args.check_images is not False
    user_reports = [verify_user_dataset(n, shots=args.shots, check_images=check_user, workers=args.workers,
                                        progress=not args.no_progress, knowledge=knowledge.get(n)) for n in user]
    if reports:
        print(format_reports(reports, data_root, check_images=check_images, strict=args.strict))
    if user_reports:
        print(("\n" if reports else "") + format_user_reports(user_reports, check_images=check_user))
    ok = all(r.ok(args.strict) for r in reports) and all(r.ok() for r in user_reports)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_tool(main))
