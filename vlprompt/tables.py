"""One table writer for every report: Markdown for reading, CSV for tools, written atomically.

A report builds its Markdown with :func:`markdown_table` (``| a | b |`` rows under a ``|---|---|``
rule, an optional ``### title`` line first) and writes it with the CSV of its raw numbers through
:func:`write_tables` (``<name>.md`` and ``<name>.csv``, each by :func:`vlprompt.io.atomic_write_text`).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .io import atomic_write_text

__all__ = ["csv_text", "markdown_table", "write_tables"]


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
                 rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> dict[str, Path]:
    """Write ``markdown`` to ``<out_dir>/<name>.md`` and the rows to ``<name>.csv`` (both atomically);
    ``{"md": path, "csv": path}``."""
    out = Path(out_dir)
    return {"md": atomic_write_text(out / f"{name}.md", markdown),
            "csv": atomic_write_text(out / f"{name}.csv", csv_text(header, rows))}
