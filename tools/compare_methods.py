"""Base-to-novel results of several methods side by side, from finished sweeps.

    python tools/compare_methods.py --methods zsclip coop cocoop kgcoop maple promptsrc
    python tools/compare_methods.py --methods zsclip coop --datasets toy-patterns --out compare.md

Reads ``<work-root>/<method>/<dataset>/seed<S>/sweep_result.json`` as written by
``tools/base2novel.py`` (never its logs). Per dataset base and novel are averaged over seeds and HM
is taken of the means; the Average row is the HM of the averaged base and novel accuracies.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlprompt.cli import add_debug_argument, run_tool


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", required=True)
    parser.add_argument("--datasets", nargs="+", default=None, help="only these datasets (default: all found)")
    parser.add_argument("--work-root", type=Path, default=Path("work_dirs/base2novel"))
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    from vlprompt.engine.results import atomic_write_text
    from vlprompt.evaluation.report import comparison_table
    from vlprompt.evaluation.sweep import read_base2novel_results

    runs, lines = {}, []
    for method in args.methods:
        found = [r for r in read_base2novel_results(args.work_root / method)
                 if args.datasets is None or r["dataset"] in args.datasets]
        if not found:
            parser.error(f"no finished runs for {method!r} under {args.work_root / method} "
                         f"(run tools/base2novel.py --method {method} first)")
        runs[method] = found
        seconds = sum(r.get("seconds", 0.0) for r in found)
        lines.append(f"- {method}: {len(found)} runs, {seconds / 60:.1f} min in all")
    table = comparison_table(runs, "base-to-novel, mean over seeds") + "\n" + "\n".join(lines) + "\n"
    print(table)
    if args.out:
        atomic_write_text(args.out, table)
    return table


if __name__ == "__main__":
    run_tool(main)
