"""The base-to-novel table follows the published aggregation rules."""

import csv
import io

import pytest
from helpers import ROOT
from tool_loader import load_tool

from vlprompt.evaluation.report import base2novel_table, csv_table, harmonic_mean, markdown_table


def test_harmonic_mean_matches_published_rows():
    # CLIP and CoOp averages of the CoCoOp paper's base-to-novel table
    assert harmonic_mean(69.34, 74.22) == pytest.approx(71.70, abs=0.005)
    assert harmonic_mean(82.69, 63.22) == pytest.approx(71.66, abs=0.005)
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_average_row_is_hm_of_averaged_base_and_novel_not_mean_of_hms():
    runs = [  # dataset b's runs are from before ECE was measured
        {"dataset": "a", "seed": 1, "base": 90.0, "novel": 10.0, "base_ece": 4.0, "novel_ece": 20.0},
        {"dataset": "a", "seed": 2, "base": 80.0, "novel": 30.0, "base_ece": 6.0, "novel_ece": 30.0},
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

    assert (a["base_ece"], a["novel_ece"], b["base_ece"], avg["novel_ece"]) == (5.0, 25.0, None, None)

    md = markdown_table(rows, "demo")
    assert "| Average |  | 65.00 | 47.50 | 54.89 | - | - |" in md  # bold is for the best of a comparison, not a label
    assert f"| a | 1,2 | 85.00 ± 5.00 | 20.00 ± 10.00 | {harmonic_mean(85, 20):.2f} | 5.00 | 25.00 |" in md
    assert "| a | 2 | 80.00 | 30.00 | 43.64 | 6.00 | 30.00 |" in md and "ECE: expected calibration error" in md
    lines = list(csv.reader(io.StringIO(csv_table(rows))))
    assert lines[0] == ["dataset", "seed", "base", "novel", "hm", "base_ece", "novel_ece"]
    assert ["a", "mean", "85.0000", "20.0000", f"{harmonic_mean(85, 20):.4f}", "5.0000", "25.0000"] in lines
    assert ["b", "1", "40.0000", "70.0000", f"{harmonic_mean(40, 70):.4f}", "", ""] in lines


def test_fewshot_schedule_and_summary():
    from vlprompt.engine.sweep import fewshot_epochs
    from vlprompt.evaluation.report import fewshot_summary

    assert [fewshot_epochs("dtd", k) for k in (1, 2, 4, 8, 16)] == [50, 100, 100, 200, 200]
    assert fewshot_epochs("imagenet", 1) == 50
    runs = [{"dataset": "a", "shots": 1, "seed": s, "top1": v} for s, v in ((1, 10.0), (2, 20.0))]
    assert fewshot_summary(runs) == {"a": {1: (15.0, 5.0)}}


def test_comparison_table_puts_methods_side_by_side_from_sweep_results(tmp_path):
    import json

    from vlprompt.engine.sweep import read_base2novel_results
    from vlprompt.evaluation.report import comparison_table

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
    assert f"| a | 50.00 | **40.00** | **{harmonic_mean(50, 40):.2f}** | **75.00** | 25.00 | 37.50 |" in table
    assert "| b | 20.00 | 30.00 | 24.00 | - | - | - |" in table
    # zsclip's Average is the HM of its averaged base (35) and novel (35); coop ran one dataset only,
    # so it has no Average to stand beside zsclip's
    assert "| Average | 35.00 | 35.00 | 35.00 | - | - | - |" in table

    compare_methods = load_tool("compare_methods")  # tools/compare_methods.py, by its file

    out = tmp_path / "compare.md"
    text = compare_methods.main(["--methods", "zsclip", "coop", "--work-root", str(tmp_path), "--out", str(out)])
    assert out.read_text() == text and "- coop: 2 runs, 0.2 min in all" in text
    with pytest.raises(SystemExit):
        compare_methods.main(["--methods", "maple", "--work-root", str(tmp_path)])


def test_a_partial_sweep_adds_to_the_report_instead_of_replacing_it(tmp_path):
    from vlprompt.engine.sweep import save_result
    from vlprompt.evaluation.report import STD_NOTE, write_base2novel_report

    for dataset in ("toy-shapes", "toy-hues"):
        for seed in (1, 2):
            run = {"dataset": dataset, "seed": seed, "base": 50.0 + seed, "novel": 40.0 + seed}
            save_result(tmp_path / dataset / f"seed{seed}", {**run, "hm": harmonic_mean(run["base"], run["novel"])})
    # a later sweep of one dataset and one seed, its run reused
    again = {"dataset": "toy-hues", "seed": 1, "base": 51.0, "novel": 41.0, "hm": harmonic_mean(51.0, 41.0)}
    files = write_base2novel_report([again], tmp_path, "coop", reused=[("toy-hues", 1)])
    md = files["md"].read_text()
    assert "| toy-shapes | 1,2 | 51.50 ± 0.50 | 41.50 ± 0.50 |" in md  # kept from the earlier sweep
    assert "| toy-hues | 1 | 51.00 | 41.00 | 45.46 | - | - | reused |" in md  # results without ECE: -
    assert "| toy-hues | 2 | 52.00 | 42.00 | 46.47 | - | - | earlier sweep |" in md
    assert STD_NOTE in md and "population standard deviation" in STD_NOTE
    assert files["csv"].read_text().count("\n") == 1 + 2 * 3 + 1  # header, 2 datasets x (2 seeds + mean), average


def _tools():
    return ROOT


def test_fewshot_keeps_the_toy_schedule_and_draws_zero_shot(tmp_path, capsys):
    root = ROOT
    from vlprompt.engine.sweep import effective_config, fewshot_epochs, fewshot_run
    from vlprompt.evaluation.report import write_fewshot_report

    assert fewshot_epochs("toy-shapes", 16) is None and fewshot_epochs("dtd", 16) == 200
    run = fewshot_run("coop", "toy-shapes", 16, 1, tmp_path / "run", [], None)
    assert not any(o.startswith("train_cfg.max_epochs=") for o in run.options)
    toy_epochs = effective_config(root / "configs/coop/toy_shapes.py")["train_cfg"]["max_epochs"]
    assert effective_config(run.config_file, run.options)["train_cfg"]["max_epochs"] == toy_epochs < 200
    runs = [{"dataset": "toy-shapes", "shots": k, "seed": s, "top1": 50.0 + k, "ece": 10.0 * k + s}
            for k in (1, 2) for s in (1, 2)]
    write_fewshot_report(runs, tmp_path, "coop", {"toy-shapes": 66.67})
    md = (tmp_path / "fewshot.md").read_text()
    assert "| dataset | zero-shot | 1 shot | 2 shots |" in md and "| toy-shapes | 66.67 | 51.00 ± 0.00 |" in md
    # ECE: a table of its own (mean ± std over seeds), and a column of the CSV
    assert "few-shot ECE" in md and "| toy-shapes | 11.50 ± 0.50 | 21.50 ± 0.50 |" in md
    assert "toy-shapes,2,2,52.0000,22.0000" in (tmp_path / "fewshot.csv").read_text()
    assert (tmp_path / "fewshot.png").is_file()


def test_transfer_table_has_a_zero_shot_row(tmp_path):
    from vlprompt.datasets import get_protocol
    from vlprompt.evaluation.report import write_transfer_report

    protocol = get_protocol("toy-domain-generalization")
    targets = [t.dataset for t in protocol.targets]
    per_seed = {1: {t: 40.0 for t in targets}}
    zero_shot = {t: 10.0 * (i + 1) for i, t in enumerate(targets)}
    text = write_transfer_report(per_seed, protocol, tmp_path, "coop", zero_shot)
    # average over the 3 domains; the best of each column bold (the last target: a tie)
    assert "| zero-shot CLIP | 10.00 | 20.00 | 30.00 | **40.00** | 30.00 |" in text
    assert "| coop | **40.00** | **40.00** | **40.00** | **40.00** | **40.00** |" in text


def test_test_py_prints_a_summary_naming_the_subsample_and_writes_results_by_default(tmp_path, capsys):
    import importlib.util
    import json

    root = _tools()
    spec = importlib.util.spec_from_file_location("test_tool", root / "tools/test.py")  # not the stdlib's test
    test_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_tool)

    work = tmp_path / "zs"
    config = str(root / "configs/zsclip/toy_shapes.py")
    test_tool.main([config, "none", "--subsample", "novel", "--work-dir", str(work)])
    out = work / "test_novel.json"
    record = json.loads(out.read_text())
    top1 = record["metrics"]["accuracy/top1"]
    assert record["run"]["subsample"] == "novel"
    summary = f"toy_shapes: top-1 {top1:.2f} on the novel classes of toy-shapes  (results: {out})"
    assert summary in capsys.readouterr().out


def test_train_py_tensorboard_flag_sets_the_config_key(monkeypatch):
    root = _tools()
    train_tool = load_tool("train")

    import vlprompt.engine

    seen = {}

    class Built(Exception):
        pass

    def fake_build_runner(cfg, launcher="none"):
        seen["tensorboard"] = cfg.tensorboard
        raise Built

    monkeypatch.setattr(vlprompt.engine, "build_runner", fake_build_runner)
    with pytest.raises(Built):
        train_tool.main([str(root / "configs/coop/toy_shapes.py"), "--work-dir", "/tmp/unused", "--tensorboard"])
    assert seen == {"tensorboard": True}
