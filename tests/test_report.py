"""The base-to-novel table follows the published aggregation rules."""

import csv
import io

import pytest

from vlprompt.evaluation.report import base2novel_table, csv_table, harmonic_mean, markdown_table


def test_harmonic_mean_matches_published_rows():
    # CLIP and CoOp averages of the CoCoOp paper's base-to-novel table
    assert harmonic_mean(69.34, 74.22) == pytest.approx(71.70, abs=0.005)
    assert harmonic_mean(82.69, 63.22) == pytest.approx(71.66, abs=0.005)
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_average_row_is_hm_of_averaged_base_and_novel_not_mean_of_hms():
    runs = [
        {"dataset": "a", "seed": 1, "base": 90.0, "novel": 10.0},
        {"dataset": "a", "seed": 2, "base": 80.0, "novel": 30.0},
        {"dataset": "b", "seed": 1, "base": 40.0, "novel": 70.0},
        {"dataset": "b", "seed": 2, "base": 50.0, "novel": 80.0},
    ]
    rows = base2novel_table(runs)
    a, b, avg = rows
    assert (a["base"], a["novel"]) == (85.0, 20.0)
    assert a["hm"] == pytest.approx(harmonic_mean(85.0, 20.0))  # HM of seed means, not mean of seed HMs
    assert a["hm"] != pytest.approx(sum(s["hm"] for s in a["per_seed"]) / 2)
    assert avg["dataset"] == "Average"
    assert (avg["base"], avg["novel"]) == (65.0, 47.5)
    assert avg["hm"] == pytest.approx(harmonic_mean(65.0, 47.5))
    assert avg["hm"] != pytest.approx((a["hm"] + b["hm"]) / 2, abs=0.5)

    md = markdown_table(rows, "demo")
    assert "| **Average** |  | 65.00 | 47.50 | 54.89 |" in md
    lines = list(csv.reader(io.StringIO(csv_table(rows))))
    assert lines[0] == ["dataset", "seed", "base", "novel", "hm"]
    assert ["a", "mean", "85.0000", "20.0000", f"{harmonic_mean(85, 20):.4f}"] in lines


def test_fewshot_schedule_and_summary():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    import fewshot

    assert [fewshot.epochs_for("dtd", k) for k in (1, 2, 4, 8, 16)] == [50, 100, 100, 200, 200]
    assert fewshot.epochs_for("imagenet", 1) == 50
    runs = [{"dataset": "a", "shots": 1, "seed": s, "top1": v} for s, v in ((1, 10.0), (2, 20.0))]
    assert fewshot.summarize(runs) == {"a": {1: (15.0, 5.0)}}
