"""One table writer for every report: Markdown for reading, CSV for tools, written atomically.

A report builds its Markdown with :func:`markdown_table` (``| a | b |`` rows under a ``|---|---|``
rule, an optional ``### title`` line first) and writes it with the CSV of its raw numbers through
:func:`write_tables` (``<name>.md`` and ``<name>.csv``, each by :func:`vlprompt.io.atomic_write_text`).

Two rules hold for every report, here so that no table can break them:

* bold means best: :func:`bold_best` bolds the highest value (ties: all of them) among the cells that
  compare the same thing, and nothing else is bold (no row label, no "our method" cell);
* a table says which settings its runs changed from the shipped configs (:func:`settings_note`), under
  the Markdown table and in a ``settings`` column of the CSV (every row, so the file stays one plain
  table that any CSV reader loads), so a 5-epoch run never passes for a full one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .io import atomic_write, atomic_write_text

__all__ = ["SETTINGS_NOTE", "bold_best", "csv_text", "harmonic_mean", "markdown_table", "save_plot", "settings_note",
           "settings_text", "summarise_settings", "write_tables"]

SETTINGS_NOTE = "settings that differ from the shipped configs"
"""How a report names the settings its runs changed (``<SETTINGS_NOTE>: key=value, ...``)."""
_NUMBER = re.compile(r"\s*(?:\*\*)?\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")


def harmonic_mean(base: float, novel: float) -> float:
    """The harmonic mean of base and novel accuracy, a base-to-novel table's HM (0 when both are 0)."""
    return 2 * base * novel / (base + novel) if base + novel > 0 else 0.0


def _number(cell: Any) -> float | None:
    """The number a cell shows first (``"51.00 ± 0.50"``: 51.0), ``None`` for ``-``, blanks and text."""
    if isinstance(cell, bool):
        return None
    if isinstance(cell, (int, float)):
        return float(cell)
    match = _NUMBER.match(str(cell))
    return float(match.group(1)) if match else None


def bold_best(rows: Sequence[Sequence[Any]], columns: Iterable[int] = (),
              groups: Iterable[Iterable[tuple[int, int]]] = ()) -> list[list[Any]]:
    """``rows`` (a copy) with the best cell of each comparison in bold (``**x**``).

    A comparison is a column of ``columns`` (all its rows: methods as rows) or a group of
    ``(row, column)`` cells in ``groups`` (methods side by side in one row, or the rows of one
    dataset). The best is the highest number as the cell shows it (formatted cells such as
    ``"51.00 ± 0.50"`` compare by their first number), so values that print alike tie and are all
    bold; cells without a number (``-``) take no part, and a comparison of fewer than two numbers
    bolds nothing (a lone value is no one's best)."""
    out = [list(r) for r in rows]
    comparisons = [[(i, c) for i in range(len(out)) if c < len(out[i])] for c in columns] + [list(g) for g in groups]
    bold: set[tuple[int, int]] = set()
    for cells in comparisons:
        shown = {(i, c): _number(out[i][c]) for i, c in cells}
        numbers = {k: v for k, v in shown.items() if v is not None}
        if len(numbers) < 2:
            continue
        best = max(numbers.values())
        bold.update(k for k, v in numbers.items() if v == best)
    for i, c in bold:
        out[i][c] = f"**{out[i][c]}**"
    return out


def _show_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def summarise_settings(per_run: Sequence[Mapping[str, Any] | None]) -> list[str]:
    """``key=value`` for every setting the runs changed from their shipped configs, from one
    ``{dotted key: value}`` per run (``None``: the run recorded no config). A value that not every run
    has says how many had it (``train_cfg.max_epochs=5 (2 of 6 runs)``); runs without a record are
    counted at the end, since what they changed is unknown."""
    known = [r for r in per_run if r is not None]
    counts: dict[tuple[str, str], int] = {}
    for run in known:
        for key, value in run.items():
            shown = (key, _show_value(value))
            counts[shown] = counts.get(shown, 0) + 1
    total = len(per_run)
    out = [f"{k}={v}" + ("" if n == total else f" ({n} of {total} runs)") for (k, v), n in sorted(counts.items())]
    if len(known) < total:
        out.append(f"unknown for {total - len(known)} of {total} runs (they recorded no config)")
    return out


def settings_text(settings: Sequence[str]) -> str:
    """The settings as one CSV cell or plot line: ``key=value; key=value`` (``""``: as shipped)."""
    return "; ".join(settings)


def settings_note(settings: Sequence[str]) -> str:
    """The line under a table or plot: ``settings that differ from the shipped configs: a=1, b=2``
    (``none`` when the runs used the shipped settings)."""
    return f"{SETTINGS_NOTE}: {', '.join(settings) if settings else 'none'}"


def _markdown_row(cells: Iterable[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> str:
    """A Markdown table, each line ending in a newline; ``title`` goes first as ``### title`` and a
    blank line. Cells are written with ``str`` (format numbers before)."""
    lines = [f"### {title}\n"] if title else []
    lines += [_markdown_row(header), "|---" * len(header) + "|"]
    lines += [_markdown_row(r) for r in rows]
    return "\n".join(lines) + "\n"


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> str:
    """The rows as CSV (``csv.writer``'s dialect) under ``header``; a row may be a mapping by column."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(k, "") for k in header] if isinstance(row, Mapping) else row)
    return buf.getvalue()


def write_tables(out_dir: str | os.PathLike, name: str, markdown: str, header: Sequence[str],
                 rows: Iterable[Sequence[Any] | Mapping[str, Any]],
                 settings: Sequence[str] | None = None) -> dict[str, Path]:
    """Write ``markdown`` to ``<out_dir>/<name>.md`` and the rows to ``<name>.csv`` (both atomically);
    ``{"md": path, "csv": path}``. With ``settings`` (:func:`summarise_settings`; empty: as shipped)
    the Markdown ends with :func:`settings_note` and the CSV has a last ``settings`` column holding
    :func:`settings_text` on every row."""
    out = Path(out_dir)
    if settings is not None:
        markdown = markdown.rstrip("\n") + f"\n\n{settings_note(settings)}\n"
        cell = settings_text(settings)
        header = [*header, "settings"]
        rows = ({**r, "settings": cell} if isinstance(r, Mapping) else [*r, cell] for r in rows)
    return {"md": atomic_write_text(out / f"{name}.md", markdown),
            "csv": atomic_write_text(out / f"{name}.csv", csv_text(header, rows))}


def save_plot(fig: Any, path: str | os.PathLike, settings: Sequence[str] | None = None, dpi: int = 120) -> Path:
    """Save a matplotlib figure as ``path`` (atomically) and close it. With ``settings`` the figure
    gets :func:`settings_note` as a footnote and the PNG keeps it as its ``Description`` text, so a
    plot of shortened runs says so wherever the image goes."""
    import textwrap

    import matplotlib.pyplot as plt

    kwargs: dict[str, Any] = {"dpi": dpi}
    try:
        if settings is not None:
            note = settings_note(settings)
            wrapped = textwrap.fill(note, width=int(fig.get_figwidth() * 17), subsequent_indent="  ")
            lines = wrapped.count("\n") + 1
            fig.text(0.01, 0.01, wrapped, fontsize=7, color="0.35", ha="left", va="bottom")
            fig.tight_layout(rect=(0, min(0.3, 0.13 * lines / fig.get_figheight()), 1, 1))
            if Path(path).suffix.lower() == ".png":
                kwargs["metadata"] = {"Description": note}
        return atomic_write(path, lambda tmp: fig.savefig(tmp, **kwargs), suffix=Path(path).suffix)
    finally:
        plt.close(fig)
