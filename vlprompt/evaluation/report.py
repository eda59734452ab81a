"""Tables and plots from per-run ``results.json`` files, with the published aggregation rules.

Base-to-novel (CoCoOp's tables): per dataset, base and novel accuracy are averaged over seeds and
HM = 2BN / (B + N) is taken of those means. The "Average" row averages base and novel over the
datasets and takes the HM of the two averages; it is not the mean of the per-dataset HMs.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from .. import tables
from ..tables import harmonic_mean  # noqa: F401  (re-exported: its name before it moved)


def run_settings(results: Iterable[Mapping], implied: Callable[[Mapping], Sequence[str]]) -> list[str]:
    """What the finished runs (``sweep_result.json`` records) changed from their shipped configs, for a
    report's note (:func:`vlprompt.tables.summarise_settings`). ``implied(result)``: the options the
    sweep itself gave that run (seed, shots, ...), which are the protocol, not a change."""
    from ..engine.sweep import changed_settings

    return tables.summarise_settings([changed_settings(r, implied(r)) for r in results])


def seed_options(result: Mapping) -> list[str]:
    """The options a base-to-novel or transfer sweep gives a run: its seed."""
    return [f"randomness.seed={result['seed']}"]


def base2novel_table(runs: Iterable[Mapping]) -> list[dict]:
    """Rows ``{dataset, seeds, base, novel, hm, base_std, novel_std, per_seed}`` plus an Average row.

    ``runs`` are dicts with ``dataset``, ``seed``, ``base`` and ``novel`` (accuracy in %).
    """
    by_dataset: dict[str, list[Mapping]] = {}
    for run in runs:
        by_dataset.setdefault(run["dataset"], []).append(run)
    rows = []
    for dataset, items in by_dataset.items():
        items = sorted(items, key=lambda r: r["seed"])
        base = [r["base"] for r in items]
        novel = [r["novel"] for r in items]
        b, n = statistics.fmean(base), statistics.fmean(novel)
        rows.append({
            "dataset": dataset, "seeds": [r["seed"] for r in items], "base": b, "novel": n,
            "hm": harmonic_mean(b, n),
            "base_std": statistics.pstdev(base) if len(base) > 1 else 0.0,
            "novel_std": statistics.pstdev(novel) if len(novel) > 1 else 0.0,
            **{f"{task}_ece": mean_or_none(r.get(f"{task}_ece") for r in items) for task in ("base", "novel")},
            "per_seed": [{"seed": r["seed"], "base": r["base"], "novel": r["novel"],
                          "hm": harmonic_mean(r["base"], r["novel"]), "origin": r.get("origin", ""),
                          "base_ece": r.get("base_ece"), "novel_ece": r.get("novel_ece")}
                         for r in items],
        })
    if len(rows) > 1:
        b = statistics.fmean(r["base"] for r in rows)
        n = statistics.fmean(r["novel"] for r in rows)
        rows.append({"dataset": "Average", "seeds": [], "base": b, "novel": n, "hm": harmonic_mean(b, n),
                     "base_std": 0.0, "novel_std": 0.0, "per_seed": [],
                     **{f"{t}_ece": mean_or_none(r[f"{t}_ece"] for r in rows) for t in ("base", "novel")}})
    return rows


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """The mean of ``values``, or ``None`` when one is unknown (a run from before ECE was measured) or none given."""
    values = list(values)
    return None if not values or any(v is None for v in values) else statistics.fmean(values)


def _ece_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


CSV_HEADER = ("dataset", "seed", "base", "novel", "hm", "base_ece", "novel_ece")
STD_NOTE = "± is the population standard deviation over seeds (statistics.pstdev), as CoOp's parse_test_res.py."
ECE_NOTE = ("ECE: expected calibration error (%, 15 equal-width bins of the top class's probability; "
            "vlprompt.engine.metrics), lower is better.")


def markdown_table(rows: Sequence[Mapping], title: str | None = None, per_seed: bool = True) -> str:
    """Base / novel / HM per dataset (mean over seeds, with per-seed values in a second table; a run
    dict with ``origin`` says whether it ran in this sweep, was reused, or comes from an earlier one)."""
    means = []
    for r in rows:
        seeds = ",".join(str(s) for s in r["seeds"])
        name = r["dataset"]
        base = f"{r['base']:.2f}" + (f" ± {r['base_std']:.2f}" if r["base_std"] else "")
        novel = f"{r['novel']:.2f}" + (f" ± {r['novel_std']:.2f}" if r["novel_std"] else "")
        means.append([name, seeds, base, novel, f"{r['hm']:.2f}", _ece_cell(r.get("base_ece")),
                      _ece_cell(r.get("novel_ece"))])
    text = tables.markdown_table(["dataset", "seeds", "base", "novel", "HM", "base ECE", "novel ECE"], means, title)
    if any(r["base_std"] or r["novel_std"] for r in rows):
        text += f"\n{STD_NOTE}\n"
    text += f"\n{ECE_NOTE}\n"
    if per_seed and any(r["per_seed"] for r in rows):
        text += "\n" + tables.markdown_table(
            ["dataset", "seed", "base", "novel", "HM", "base ECE", "novel ECE", "run"],
            ([r["dataset"], s["seed"], f"{s['base']:.2f}", f"{s['novel']:.2f}", f"{s['hm']:.2f}",
              _ece_cell(s.get("base_ece")), _ece_cell(s.get("novel_ece")), s.get("origin", "")]
             for r in rows for s in r["per_seed"]))
    return text


def csv_table(rows: Sequence[Mapping]) -> str:
    """One line per (dataset, seed) and one per dataset mean (seed ``mean``)."""
    return tables.csv_text(CSV_HEADER, _csv_rows(rows))


def _csv_rows(rows: Sequence[Mapping]) -> Iterable[list]:
    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.4f}"

    for r in rows:
        for s in [*r["per_seed"], {**r, "seed": "mean"}]:
            yield [r["dataset"], s["seed"], *(number(s.get(k)) for k in CSV_HEADER[2:])]


def plot_base_novel(by_method: Mapping[str, Sequence[Mapping]], path: str | os.PathLike,
                    settings: Sequence[str] | None = None) -> Path:
    """Base vs novel accuracy per dataset (one marker per method), with iso-HM curves; PNG (with the
    settings that differ from the shipped configs as a footnote, when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    grid = np.linspace(1, 100, 200)
    for hm in (20, 40, 60, 80):
        novel = hm * grid / (2 * grid - hm)
        keep = (novel > 0) & (novel <= 100) & (2 * grid > hm)
        ax.plot(grid[keep], novel[keep], color="0.85", lw=0.8, zorder=0)
        ax.annotate(f"HM {hm}", (grid[keep][-1], novel[keep][-1]), fontsize=7, color="0.6")
    markers = "osD^vP*X"
    for i, (method, rows) in enumerate(by_method.items()):
        pts = [r for r in rows if r["dataset"] != "Average"]
        ax.scatter([r["base"] for r in pts], [r["novel"] for r in pts], marker=markers[i % len(markers)],
                   label=method, s=40)
        for r in pts:
            ax.annotate(r["dataset"], (r["base"], r["novel"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.plot([0, 100], [0, 100], ls=":", color="0.7", lw=0.8)
    ax.set(xlabel="base accuracy (%)", ylabel="novel accuracy (%)", xlim=(0, 100), ylim=(0, 100),
           title="Base-to-novel generalisation")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return tables.save_plot(fig, path, settings)


def write_base2novel_report(runs: Iterable[Mapping], out_dir: str | os.PathLike, method: str,
                            reused: Iterable[tuple[str, int]] = ()) -> dict[str, Path]:
    """``base2novel.md``, ``base2novel.csv`` and ``base2novel.png`` in ``out_dir``, rebuilt from every
    finished run under it: a partial sweep (one dataset, one seed) adds to the report instead of
    replacing it. ``runs`` are this sweep's results (they win over the files); ``reused`` names the
    (dataset, seed) pairs of them that were taken from an earlier sweep, and runs found only on disk
    are marked as from an earlier sweep. The tables and the plot name the settings any of these runs
    changed from the shipped configs (from the configs the runs recorded)."""
    from ..engine.sweep import read_base2novel_results

    reused = set(reused)
    merged = {(r["dataset"], r["seed"]): {**r, "origin": "earlier sweep"} for r in read_base2novel_results(out_dir)}
    for r in runs:
        key = (r["dataset"], r["seed"])
        merged[key] = {**r, "origin": "reused" if key in reused else "this sweep"}
    rows = base2novel_table(merged.values())
    settings = run_settings(merged.values(), seed_options)
    out = Path(out_dir)
    files = tables.write_tables(out, "base2novel", markdown_table(rows, f"{method}: base-to-novel"), CSV_HEADER,
                                _csv_rows(rows), settings)
    return {**files, "png": plot_base_novel({method: rows}, out / "base2novel.png", settings)}


def comparison_table(runs_by_method: Mapping[str, Iterable[Mapping]], title: str | None = None) -> str:
    """Methods side by side: per dataset (and the Average row), base / novel / HM of each method,
    the best method's value of each in bold (:func:`vlprompt.tables.bold_best`).

    Each method's rows follow :func:`base2novel_table`; a dataset a method has no runs for shows
    ``-``, and so does the Average of a method that ran fewer than two datasets.
    """
    by_method = {m: {r["dataset"]: r for r in base2novel_table(list(runs))} for m, runs in runs_by_method.items()}
    datasets: list[str] = []
    for rows in by_method.values():
        datasets += [d for d in rows if d not in datasets and d != "Average"]
    if len(datasets) > 1:
        datasets.append("Average")
    methods = list(by_method)
    rows = []
    for d in datasets:
        cells = [d]
        for m in methods:
            r = by_method[m].get(d)
            cells += [f"{r['base']:.2f}", f"{r['novel']:.2f}", f"{r['hm']:.2f}"] if r else ["-", "-", "-"]
        rows.append(cells)
    header = ["dataset"] + [f"{m} {col}" for m in methods for col in ("base", "novel", "HM")]
    rivals = [[(i, 1 + 3 * j + k) for j in range(len(methods))] for i in range(len(rows)) for k in range(3)]
    return tables.markdown_table(header, tables.bold_best(rows, groups=rivals), title)


def fewshot_summary(runs: list[dict]) -> dict[str, dict[int, tuple[float, float]]]:
    """``{dataset: {shots: (mean, std)}}`` over seeds."""
    return _summary(runs, "top1")


def _summary(runs: list[dict], key: str) -> dict[str, dict[int, tuple[float, float]]]:
    """``{dataset: {shots: (mean, std)}}`` of ``key`` over seeds (a dataset's shots where a run lacks it: left out)."""
    table: dict[str, dict[int, list[float]]] = {}
    for r in runs:
        table.setdefault(r["dataset"], {}).setdefault(r["shots"], []).append(r.get(key))
    table = {d: {k: v for k, v in s.items() if None not in v} for d, s in table.items()}
    return {d: {k: (statistics.fmean(v), statistics.pstdev(v) if len(v) > 1 else 0.0) for k, v in sorted(s.items())}
            for d, s in table.items()}


def fewshot_implied(result: Mapping) -> list[str]:
    """The options a few-shot sweep gives a run itself (:func:`vlprompt.engine.sweep.fewshot_options`)."""
    from ..engine.sweep import fewshot_options

    return fewshot_options(result["dataset"], result["shots"], result["seed"])


def write_fewshot_report(runs: list[dict], out_dir: Path, method: str,
                         zero_shot: dict[str, float | None] | None = None) -> str:
    """Write ``fewshot.md``, ``.csv`` and ``.png`` (y from 0) to ``out_dir``; returns the Markdown.
    ``zero_shot`` (top-1 per dataset) is a column of the table and a dashed line of the plot. The x
    axis is log2 with the shot counts as its only ticks. Table and plot name the settings the runs
    changed from the shipped configs (``--epochs`` included; CoOp's schedule is not a change)."""
    zero_shot = {d: a for d, a in (zero_shot or {}).items() if a is not None}
    settings = run_settings(runs, fewshot_implied)
    summary = fewshot_summary(runs)
    shots = sorted({r["shots"] for r in runs})
    header = ["dataset", "zero-shot"] + [f"{k} shot{'s' if k > 1 else ''}" for k in shots]
    md = tables.markdown_table(header, ([dataset, f"{zero_shot[dataset]:.2f}" if dataset in zero_shot else "-",
                                  *(f"{row[k][0]:.2f} ± {row[k][1]:.2f}" if k in row else "-" for k in shots)]
                                 for dataset, row in summary.items()),
                        f"{method}: few-shot top-1 (all classes, mean ± std over seeds)")
    eces = _summary(runs, "ece")
    if any(eces.values()):
        md += "\n" + tables.markdown_table(
            ["dataset"] + header[2:], ([dataset, *(f"{row[k][0]:.2f} ± {row[k][1]:.2f}" if k in row else "-"
                                                   for k in shots)] for dataset, row in eces.items()),
            f"{method}: few-shot ECE (%, mean ± std over seeds)") + f"\n{ECE_NOTE}\n"
    files = tables.write_tables(out_dir, "fewshot", md, ["dataset", "shots", "seed", "top1", "ece"],
                                ([r["dataset"], r["shots"], r["seed"], f"{r['top1']:.4f}",
                                  "" if r.get("ece") is None else f"{r['ece']:.4f}"]
                                 for r in sorted(runs, key=lambda r: (r["dataset"], r["shots"], r["seed"]))),
                                settings)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for dataset, row in summary.items():
        ks = sorted(row)
        line = ax.errorbar(ks, [row[k][0] for k in ks], yerr=[row[k][1] for k in ks], marker="o", capsize=3,
                           label=dataset)
        color = line.lines[0].get_color()
        if dataset in zero_shot:
            ax.axhline(zero_shot[dataset], ls="--", lw=1, color=color,
                       label=f"{dataset} zero-shot ({zero_shot[dataset]:.1f})")
    # log2 with the shot counts as the only ticks: a log10 axis labels minor ticks (3x10^0) when
    # the shots span less than a decade
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(shots))
    ax.xaxis.set_major_formatter(FixedFormatter([str(k) for k in shots]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set(xlabel="shots per class", ylabel="top-1 accuracy (%)", title=f"{method}: few-shot learning", ylim=(0, 100))
    ax.legend(fontsize=8)
    fig.tight_layout()
    tables.save_plot(fig, out_dir / "fewshot.png", settings)
    return files["md"].read_text()


def write_transfer_report(per_seed: dict[int, dict[str, float]], protocol, out_dir: Path, method: str,
                          zero_shot: dict[str, float | None] | None = None,
                          settings: Sequence[str] | None = None) -> str:
    """Write ``<protocol>.md`` and ``.csv`` to ``out_dir``; returns the Markdown (with a zero-shot
    CLIP row when ``zero_shot`` gives its top-1 per target). The best value of each column is bold,
    whichever row has it; ``settings`` (:func:`run_settings`) are the changes from the shipped configs."""
    targets = [t.dataset for t in protocol.targets]
    mean = {t: statistics.fmean(acc[t] for acc in per_seed.values()) for t in targets}
    average = statistics.fmean(mean[t] for t in protocol.average) if protocol.average else None
    rows = []
    if zero_shot:
        cells = ["zero-shot CLIP"] + [f"{zero_shot[t]:.2f}" if zero_shot.get(t) is not None else "-" for t in targets]
        if average is not None:
            known = [zero_shot.get(t) for t in protocol.average]
            cells.append(f"{statistics.fmean(known):.2f}" if None not in known else "-")
        rows.append(cells)
    ours = [method, *(f"{mean[t]:.2f}" for t in targets)]
    rows.append(ours + ([f"{average:.2f}"] if average is not None else []))
    header = ["method", *targets] + (["average"] if average is not None else [])
    rows = tables.bold_best(rows, columns=range(1, len(header)))
    text = (tables.markdown_table(header, rows, f"{protocol.name} ({protocol.description})")
            + f"\nseeds: {sorted(per_seed)}; the average is over {', '.join(protocol.average)}\n")
    files = tables.write_tables(out_dir, protocol.name, text, ["target", "seed", "top1"],
                                ([t, seed, f"{acc[t]:.4f}"] for seed, acc in sorted(per_seed.items()) for t in targets),
                                settings)
    return files["md"].read_text()
