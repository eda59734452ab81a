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


def test_comparison_table_puts_methods_side_by_side_from_sweep_results(tmp_path):
    import json
    import sys
    from pathlib import Path

    from vlprompt.evaluation.report import comparison_table
    from vlprompt.evaluation.sweep import read_base2novel_results

    runs = {
        "zsclip": [{"dataset": "a", "seed": 1, "base": 50.0, "novel": 40.0},
                   {"dataset": "b", "seed": 1, "base": 20.0, "novel": 30.0}],
        "coop": [{"dataset": "a", "seed": 1, "base": 70.0, "novel": 30.0},
                 {"dataset": "a", "seed": 2, "base": 80.0, "novel": 20.0}],
    }
    for method, items in runs.items():
        for r in items:
            d = tmp_path / method / r["dataset"] / f"seed{r['seed']}"
            d.mkdir(parents=True)
            (d / "sweep_result.json").write_text(json.dumps(dict(r, method=method, seconds=6.0)))
    read = {m: read_base2novel_results(tmp_path / m) for m in runs}
    assert sorted((r["dataset"], r["seed"]) for r in read["coop"]) == [("a", 1), ("a", 2)]
    table = comparison_table(read)
    assert table.splitlines()[0] == ("| dataset | zsclip base | zsclip novel | zsclip HM | coop base | coop novel "
                                     "| coop HM |")
    assert f"| a | 50.00 | 40.00 | {harmonic_mean(50, 40):.2f} | 75.00 | 25.00 | 37.50 |" in table
    assert "| b | 20.00 | 30.00 | 24.00 | - | - | - |" in table
    # zsclip's Average is the HM of its averaged base (35) and novel (35); coop ran one dataset only,
    # so it has no Average to stand beside zsclip's
    assert "| **Average** | 35.00 | 35.00 | 35.00 | - | - | - |" in table

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    import compare_methods

    out = tmp_path / "compare.md"
    text = compare_methods.main(["--methods", "zsclip", "coop", "--work-root", str(tmp_path), "--out", str(out)])
    assert out.read_text() == text and "- coop: 2 runs, 0.2 min in all" in text
    with pytest.raises(SystemExit):
        compare_methods.main(["--methods", "maple", "--work-root", str(tmp_path)])


def test_a_partial_sweep_adds_to_the_report_instead_of_replacing_it(tmp_path):
    from vlprompt.evaluation.report import STD_NOTE, write_base2novel_report
    from vlprompt.evaluation.sweep import save_result

    for dataset in ("toy-shapes", "toy-hues"):
        for seed in (1, 2):
            run = {"dataset": dataset, "seed": seed, "base": 50.0 + seed, "novel": 40.0 + seed}
            save_result(tmp_path / dataset / f"seed{seed}", {**run, "hm": harmonic_mean(run["base"], run["novel"])})
    # a later sweep of one dataset and one seed, its run reused
    again = {"dataset": "toy-hues", "seed": 1, "base": 51.0, "novel": 41.0, "hm": harmonic_mean(51.0, 41.0)}
    files = write_base2novel_report([again], tmp_path, "coop", reused=[("toy-hues", 1)])
    md = files["md"].read_text()
    assert "| toy-shapes | 1,2 | 51.50 ± 0.50 | 41.50 ± 0.50 |" in md  # kept from the earlier sweep
    assert "| toy-hues | 1 | 51.00 | 41.00 | 45.46 | reused |" in md
    assert "| toy-hues | 2 | 52.00 | 42.00 | 46.47 | earlier sweep |" in md
    assert STD_NOTE in md and "population standard deviation" in STD_NOTE
    assert files["csv"].read_text().count("\n") == 1 + 2 * 3 + 1  # header, 2 datasets x (2 seeds + mean), average
