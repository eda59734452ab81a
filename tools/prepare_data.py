"""Check that a data root holds the benchmarks in the layout vlprompt reads.

    python tools/prepare_data.py verify --data-root /data
    python tools/prepare_data.py verify --data-root /data --datasets dtd eurosat --check-images
    python tools/prepare_data.py verify --data-root /data --datasets dtd --knowledge dtd=/data/dtd_knowledge.tsv
    python tools/prepare_data.py verify --data-root /data --datasets elevater   # ELEVATER's 19 IC tasks

For each dataset it prints found / missing / broken, the image counts against the published ones,
and for anything wrong the exact file or folder expected and where to get it; with a class-description
file (``--knowledge``, or ``knowledge.json`` / ``knowledge.tsv`` in a dataset's folder), how many
classes it describes and the first one it misses. Exit status: 0 when every requested dataset is
complete, 1 otherwise, 2 for a usage error. How to lay the datasets out: datasets/README.md.
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
                             'ELEVATER tasks; "elevater" stands for the ELEVATER tasks (elevater-<task>)')
    verify.add_argument("--check-images", action="store_true", help="decode every image (slow), not only "
                                                                     "check that it exists")
    verify.add_argument("--strict", action="store_true", help="also fail when counts differ from the published")
    verify.add_argument("--workers", type=int, default=None, help="threads used to decode images")
    verify.add_argument("--no-progress", action="store_true", help="no progress bars")
    verify.add_argument("--knowledge", nargs="+", default=[], metavar="NAME=FILE",
                        help="class-description files whose coverage to report (default: a knowledge.json / "
                             "knowledge.tsv in the dataset folder)")
    add_debug_argument(verify)
    return parser.parse_args(argv)


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
    if not data_root:
        print(f"error: no data root; pass --data-root or set ${DATA_ENV}", file=sys.stderr)
        return 2
    from vlprompt.datasets import BENCHMARKS, ELEVATER_NAMES, canonical_name, list_datasets
    from vlprompt.datasets.verify import format_reports, verify_dataset

    if args.datasets is None:
        names = list(BENCHMARKS)
    elif args.datasets == ["all"]:
        names = list_datasets()
    else:
        try:
            names = [m for n in args.datasets for m in (ELEVATER_NAMES if n.lower() == "elevater"
                                                         else (canonical_name(n),))]
        except KeyError as err:
            print(f"error: {err.args[0]}", file=sys.stderr)
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
    reports = [verify_dataset(n, data_root, check_images=args.check_images, progress=not args.no_progress,
                              workers=args.workers, knowledge=knowledge.get(n)) for n in names]
    print(format_reports(reports, data_root, check_images=args.check_images, strict=args.strict))
    return 0 if all(r.ok(args.strict) for r in reports) else 1


if __name__ == "__main__":
    sys.exit(run_tool(main))
