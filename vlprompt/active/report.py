"""Tables and plots of active-learning runs: accuracy and class balance per round, per strategy.

Reads the ``active_state.json`` of ``<root>/<strategy>/seed<S>/`` folders (what ``tools/active.py``
writes); nothing is scraped from logs.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from .. import tables
from ..errors import UserError
from .loop import STATE_FILE, read_state


class ResultsNotFoundError(UserError, FileNotFoundError):
    """A report asked of a folder that holds no finished round."""

__all__ = ["ResultsNotFoundError", "collect", "markdown_table", "plot", "summarise", "write_report"]


def collect(root: str | Path) -> dict[str, dict[int, dict]]:
    """``{strategy: {seed: state}}`` of every run under ``root`` (finished rounds only)."""
    found: dict[str, dict[int, dict]] = {}
    for path in sorted(Path(root).glob(f"*/seed*/{STATE_FILE}")):
        state = read_state(path.parent)  # checked: a damaged state is one line naming it (ActiveStateError)
        found.setdefault(path.parent.parent.name, {})[int(state["seed"])] = state
    return found


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation over seeds, as the other sweep reports (statistics.pstdev)."""
    return statistics.fmean(values), statistics.pstdev(values)


def summarise(runs: dict[str, dict[int, dict]], order: Sequence[str] | None = None) -> list[dict]:
    """One row per strategy and round: labelled images, mean / std of top-1 and of the balance over
    the seeds that finished that round."""
    rows = []
    for strategy in order or sorted(runs):
        states = runs.get(strategy) or {}
        depth = max((len(s["rounds"]) for s in states.values()), default=0)
        for r in range(depth):
            recs = [s["rounds"][r] for s in states.values() if len(s["rounds"]) > r]
            top1, spread = _mean_std([x["top1"] for x in recs])
            balance, _ = _mean_std([x["balance"] for x in recs])
            rows.append({"strategy": strategy, "round": r, "labelled": recs[0]["labelled"], "seeds": len(recs),
                         "top1": top1, "top1_std": spread, "balance": balance,
                         "classes_seen": sum(x["classes_seen"] for x in recs) / len(recs)})
    return rows


def markdown_table(rows: list[dict], key: str = "top1", digits: int = 2) -> str:
    """Strategies as rows, rounds as columns (``mean ± std`` for top-1, the mean for the balance)."""
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    rounds = sorted({r["round"] for r in rows})
    labelled = {r["round"]: r["labelled"] for r in rows}
    lines = []
    for s in strategies:
        cells = [s]
        for r in rounds:
            row = next((x for x in rows if x["strategy"] == s and x["round"] == r), None)
            if row is None:
                cells.append("")
            elif key == "top1":
                cells.append(f"{row['top1']:.{digits}f} ± {row['top1_std']:.{digits}f}")
            else:
                cells.append(f"{row[key]:.{digits + 1}f}")
        lines.append(cells)
    header = ["strategy"] + [f"r{r} ({labelled[r]})" for r in rounds]
    return tables.markdown_table(header, lines).removesuffix("\n")


def plot(rows: list[dict], path: str | Path, title: str = "", settings: Sequence[str] | None = None) -> Path:
    """Accuracy (mean, with the seeds' spread as a band) and class balance against labelled images,
    one line per strategy; a sampler and its PCB variant share a colour (PCB dashed). ``settings``:
    the changes from the shipped config, as a footnote (:func:`vlprompt.tables.save_plot`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    samplers = list(dict.fromkeys(s.split("+")[0] for s in strategies))
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(samplers)}
    fig, (ax_acc, ax_bal) = plt.subplots(1, 2, figsize=(11, 4.2))
    for s in strategies:
        pts = [r for r in rows if r["strategy"] == s]
        x = [r["labelled"] for r in pts]
        y = [r["top1"] for r in pts]
        sd = [r["top1_std"] for r in pts]
        style = dict(color=colours[s.split("+")[0]], linestyle="--" if s.endswith("+pcb") else "-", marker="o",
                     markersize=3, label=s)
        ax_acc.plot(x, y, **style)
        ax_acc.fill_between(x, [a - b for a, b in zip(y, sd, strict=True)], [a + b for a, b in zip(y, sd, strict=True)],
                            color=style["color"], alpha=0.12, linewidth=0)
        ax_bal.plot(x, [r["balance"] for r in pts], **style)
    ax_acc.set(xlabel="labelled images", ylabel="test top-1 (%)", title="accuracy (mean ± std over seeds)")
    ax_bal.set(xlabel="labelled images", ylabel="label-histogram entropy / log C",
               title="class balance of the labelled set")
    for ax in (ax_acc, ax_bal):
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=8, ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return tables.save_plot(fig, path, settings)


def write_report(root: str | Path, order: Sequence[str] | None = None, title: str = "",
                 settings: Sequence[str] | None = None) -> dict[str, Path]:
    """``active.md`` (accuracy and balance tables), ``active.csv`` and ``active.png`` in ``root``; with
    ``settings`` (the changes from the shipped config) each names them."""
    root = Path(root)
    rows = summarise(collect(root), order)
    if not rows:
        raise ResultsNotFoundError(f"no finished active-learning round under {root} "
                                   f"(expected <strategy>/seed<S>/{STATE_FILE})")
    md = (f"# {title or root.name}\n\nTest top-1 (%) after each round, mean ± std over seeds "
          "(r<k> (n): round k, n labelled images):\n\n" + markdown_table(rows) +
          "\n\nClass balance of the labelled set (entropy of its label histogram / log C; 1 = balanced):\n\n" +
          markdown_table(rows, key="balance") + "\n")
    files = tables.write_tables(root, "active", md, list(rows[0]), rows, settings)
    return {"table": files["md"], "csv": files["csv"],
            "plot": plot(rows, root / "active.png", title or root.name, settings)}
