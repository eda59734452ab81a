"""Reports that do not mislead (issue 31, item 6; item 4's probe fitted once).

* bold marks the best value of a comparison (ties: all), whichever row or method has it, and
  nothing else is bold;
* every table and plot a sweep writes names the settings its runs changed from the shipped configs,
  read from what the runs recorded (an earlier sweep's run made with other options included), and
  not the sweep's own per-run options (seed, shots, schedule, protocol);
* the few-shot plot's x ticks are the shot counts and nothing else;
* ``tools/zero_shot.py --linear-probe`` fits a dataset's probe once for it and all its domains.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from helpers import ROOT
from tool_loader import load_tool

NOTE = "settings that differ from the shipped configs"


def _bold_cells(table: str, row_label: str) -> list[str]:
    """The bold cells of the Markdown row whose first cell is ``row_label``."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[0].strip("*") == row_label:
            return [c for c in cells if c.startswith("**")]
    raise AssertionError(f"no row {row_label!r} in\n{table}")


# ------------------------------------------------------------------------------------------ bold = best
def test_transfer_table_bolds_the_best_of_each_column_even_when_zero_shot_has_it(tmp_path):
    from vlprompt.datasets import get_protocol
    from vlprompt.evaluation.report import write_transfer_report

    protocol = get_protocol("toy-domain-generalization")
    targets = [t.dataset for t in protocol.targets]  # the source, then the 3 domains averaged
    coop = {targets[0]: 80.0, targets[1]: 20.0, targets[2]: 30.0, targets[3]: 27.0}
    zero_shot = {targets[0]: 60.0, targets[1]: 25.0, targets[2]: 30.0, targets[3]: 25.0}
    text = write_transfer_report({1: coop}, protocol, tmp_path, "coop", zero_shot)
    # coop wins on the source, zero-shot on the first domain and on the average (26.67 > 25.67),
    # the second domain is a tie (both bold)
    assert _bold_cells(text, "coop") == ["**80.00**", "**30.00**", "**27.00**"]
    assert _bold_cells(text, "zero-shot CLIP") == ["**25.00**", "**30.00**", "**26.67**"]
    assert (tmp_path / f"{protocol.name}.md").read_text() == text


def test_comparison_and_base2novel_tables_bold_only_the_best_method(tmp_path):
    from vlprompt.evaluation.report import base2novel_table, comparison_table, markdown_table

    runs = {"zsclip": [{"dataset": "a", "seed": 1, "base": 50.0, "novel": 40.0},
                       {"dataset": "b", "seed": 1, "base": 20.0, "novel": 30.0}],
            "coop": [{"dataset": "a", "seed": 1, "base": 70.0, "novel": 30.0},
                     {"dataset": "b", "seed": 1, "base": 20.0, "novel": 10.0}]}
    table = comparison_table(runs)
    # per dataset and metric, the better method: coop's base on a, zsclip's novel and HM there
    # (HM(50, 40) = 44.44 > HM(70, 30) = 42.00); on b the bases tie, so both are bold
    assert _bold_cells(table, "a") == ["**40.00**", "**44.44**", "**70.00**"]
    assert _bold_cells(table, "b") == ["**20.00**", "**30.00**", "**24.00**", "**20.00**"]
    assert "**Average**" not in table and "**a**" not in table  # a label is never bold
    # one method alone: nothing to compare, nothing bold
    assert "**" not in markdown_table(base2novel_table(runs["coop"]), "coop")


def test_tta_table_bolds_the_best_method_per_dataset_and_average():
    tta = load_tool("tta")
    rows = [{"method": m, "dataset": d, "samples": 10, "of": 10, "classes": 3, "views": 8, "top1": top1,
             "ece": ece, "sec_per_sample": 0.1, "peak_memory_mb": 900.0, "processes": 1, "device": "cpu", "config": "c",
             "work_dir": "w"}
            for m, d, top1, ece in (("tpt", "x", 50.0, 4.0), ("tpt", "y", 10.0, 8.0), ("rlcf", "x", 40.0, 2.0),
                                    ("rlcf", "y", 30.0, 3.0))]
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        text, files = tta.write_table(rows, Path(out))
        bold = [line for line in text.splitlines() if "**" in line]
    # x: tpt 50 > rlcf 40; y: rlcf 30 > tpt 10; averages: tpt 30 < rlcf 35
    assert bold == ["| tpt | x | 10 / 10 | 8 | **50.00** | 4.00 | 0.100 | 900 |",
                    "| rlcf | y | 10 / 10 | 8 | **30.00** | 3.00 | 0.100 | 900 |",
                    "| rlcf | average (2) |  |  | **35.00** | 2.50 | 0.100 |  |"]


def test_bold_best_compares_numbers_as_shown():
    from vlprompt.tables import bold_best

    rows = [["a", "51.004 ± 1.00", "-"], ["b", "51.00", "3"], ["c", "9", ""]]
    assert bold_best([[r[0], r[1][:5], r[2]] for r in rows], columns=[1, 2]) == [
        ["a", "**51.00**", "-"], ["b", "**51.00**", "3"], ["c", "9", ""]]  # a tie; a lone number is no one's best


# ------------------------------------------------------------------------------------------ settings
def _fewshot_result(tmp_path: Path, seed: int, shots: int, user: list[str], top1: float) -> dict:
    """A few-shot run's record as tools/fewshot.py stores it, made with the user's options ``user``."""
    from vlprompt.engine.sweep import REPO_ROOT, effective_config, fewshot_run

    run = fewshot_run("coop", "toy-shapes", shots, seed, tmp_path / f"s{shots}" / f"seed{seed}", user, None)
    return {"method": "coop", "dataset": "toy-shapes", "shots": shots, "seed": seed, "top1": top1,
            "config": effective_config(run.config_file, run.options),
            "config_file": str(Path(run.config_file).relative_to(REPO_ROOT))}


def _png_description(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as image:
        return image.text.get("Description", "")


def _figures_saved(monkeypatch) -> list:
    """Every matplotlib figure saved from now on (the plot's text and ticks are checked on it)."""
    from matplotlib.figure import Figure

    saved, original = [], Figure.savefig

    def savefig(self, *args, **kwargs):
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def _footnotes(fig) -> str:
    return " ".join(t.get_text() for t in fig.texts)


def test_fewshot_report_names_the_changed_settings_and_not_the_sweeps_own(tmp_path, monkeypatch):
    from vlprompt.evaluation.report import write_fewshot_report

    figures = _figures_saved(monkeypatch)
    runs = [_fewshot_result(tmp_path, 1, 1, ["train_cfg.max_epochs=1", "optim_wrapper.optimizer.lr=0.5"], 40.0),
            _fewshot_result(tmp_path, 1, 2, ["train_cfg.max_epochs=1"], 45.0)]
    md = write_fewshot_report(runs, tmp_path, "coop", {"toy-shapes": 30.0})
    changed = "optim_wrapper.optimizer.lr=0.5 (1 of 2 runs), train_cfg.max_epochs=1"
    assert md.rstrip().endswith(f"{NOTE}: {changed}")
    assert "seed" not in md.split(NOTE)[1] and "num_shots" not in md.split(NOTE)[1]  # the sweep's own options
    rows = list(csv.DictReader(io.StringIO((tmp_path / "fewshot.csv").read_text())))
    assert [r["settings"] for r in rows] == [changed.replace(", ", "; ")] * 2  # one plain table, a column
    assert _png_description(tmp_path / "fewshot.png") == f"{NOTE}: {changed}"
    assert NOTE in _footnotes(figures[-1]) and "train_cfg.max_epochs=1" in _footnotes(figures[-1])


def test_fewshot_plot_ticks_are_the_shot_counts_only(tmp_path, monkeypatch):
    from vlprompt.evaluation.report import write_fewshot_report

    figures = _figures_saved(monkeypatch)
    runs = [{"dataset": "toy-shapes", "shots": k, "seed": 1, "top1": 40.0 + k} for k in (1, 2, 4)]
    write_fewshot_report(runs, tmp_path, "coop", {"toy-shapes": 30.0})
    axis = figures[-1].axes[0].xaxis
    assert [t.get_text() for t in axis.get_ticklabels()] == ["1", "2", "4"]
    assert [t.get_text() for t in axis.get_ticklabels(minor=True) if t.get_text()] == []  # no 3x10^0


def test_base2novel_report_names_an_earlier_runs_options_from_its_record(tmp_path, monkeypatch):
    from vlprompt.engine.sweep import REPO_ROOT, effective_config, save_result
    from vlprompt.evaluation.report import write_base2novel_report

    figures = _figures_saved(monkeypatch)
    config = REPO_ROOT / "configs" / "coop" / "toy_shapes.py"

    def result(seed: int, user: list[str]) -> dict:
        return {"method": "coop", "dataset": "toy-shapes", "seed": seed, "base": 60.0, "novel": 50.0, "hm": 54.5,
                "config": effective_config(config, [f"randomness.seed={seed}", *user]),
                "config_file": "configs/coop/toy_shapes.py"}

    # an earlier sweep ran seed 1 for 1 epoch; this one runs seed 2 as shipped
    save_result(tmp_path / "toy-shapes" / "seed1", result(1, ["train_cfg.max_epochs=1"]))
    files = write_base2novel_report([result(2, [])], tmp_path, "coop")
    line = f"{NOTE}: train_cfg.max_epochs=1 (1 of 2 runs)"
    assert line in files["md"].read_text()
    rows = list(csv.DictReader(io.StringIO(files["csv"].read_text())))
    assert {r["settings"] for r in rows} == {"train_cfg.max_epochs=1 (1 of 2 runs)"}
    assert _png_description(files["png"]) == line and "max_epochs=1" in _footnotes(figures[-1])
    # as shipped: the note says so
    save_result(tmp_path / "toy-shapes" / "seed1", result(1, []))
    assert f"{NOTE}: none" in write_base2novel_report([result(2, [])], tmp_path, "coop")["md"].read_text()


def test_transfer_tta_and_compare_tables_name_the_settings(tmp_path):
    from vlprompt.datasets import get_protocol
    from vlprompt.engine.sweep import effective_config, save_result
    from vlprompt.evaluation.report import run_settings, seed_options, write_transfer_report

    protocol = get_protocol("toy-domain-generalization")
    per_seed = {1: {t.dataset: 40.0 for t in protocol.targets}}
    config = "configs/coop/toy_shapes_xd.py"
    record = {"seed": 1, "config_file": config,
              "config": effective_config(ROOT / config, ["randomness.seed=1", "train_cfg.max_epochs=1"])}
    text = write_transfer_report(per_seed, protocol, tmp_path, "coop", None, run_settings([record], seed_options))
    assert f"{NOTE}: train_cfg.max_epochs=1" in text
    rows = list(csv.DictReader(io.StringIO((tmp_path / f"{protocol.name}.csv").read_text())))
    assert {r["settings"] for r in rows} == {"train_cfg.max_epochs=1"}

    tta = load_tool("tta")
    row = {"method": "tpt", "dataset": "x", "samples": 10, "of": 10, "classes": 3, "views": 8, "top1": 50.0,
           "sec_per_sample": 0.1, "processes": 1, "device": "cpu", "config": "c", "work_dir": "w"}
    text, files = tta.write_table([row, {**row, "dataset": "y"}], tmp_path, ["adapter.steps=0"])
    assert f"{NOTE}: adapter.steps=0" in text and "adapter.steps=0" in files["csv"].read_text()

    compare = load_tool("compare_methods")
    for method, user in (("zsclip", []), ("coop", ["train_cfg.max_epochs=1"])):
        rec = {"method": method, "dataset": "toy-shapes", "seed": 1, "base": 50.0, "novel": 40.0,
               "config_file": f"configs/{method}/toy_shapes.py",
               "config": effective_config(ROOT / f"configs/{method}/toy_shapes.py", ["randomness.seed=1", *user])}
        save_result(tmp_path / "b2n" / method / "toy-shapes" / "seed1", rec)
    table = compare.main(["--methods", "zsclip", "coop", "--work-root", str(tmp_path / "b2n")])
    assert table.rstrip().endswith(f"{NOTE}: coop: train_cfg.max_epochs=1")


def test_active_report_names_the_settings(tmp_path, monkeypatch):
    import json

    from vlprompt.active.loop import STATE_FILE
    from vlprompt.active.report import write_report

    figures = _figures_saved(monkeypatch)
    for seed in (1, 2):
        run = tmp_path / "random" / f"seed{seed}"
        run.mkdir(parents=True)
        rounds = [{"round": r, "labelled": 3 * (r + 1), "top1": 40.0 + r + seed, "balance": 0.9, "classes_seen": 3,
                   "class_counts": [r + 1] * 3, "selected": [3 * r, 3 * r + 1, 3 * r + 2]} for r in range(2)]
        (run / STATE_FILE).write_text(json.dumps({"seed": seed, "pool_size": 30, "rounds": rounds}))
    paths = write_report(tmp_path, settings=["active.rounds=2"])
    assert f"{NOTE}: active.rounds=2" in paths["table"].read_text()
    assert {r["settings"] for r in csv.DictReader(io.StringIO(paths["csv"].read_text()))} == {"active.rounds=2"}
    assert _png_description(paths["plot"]) == f"{NOTE}: active.rounds=2" and NOTE in _footnotes(figures[-1])


# ------------------------------------------------------------------------------------------ probe once
@pytest.fixture
def one_thread():
    """Tiny L-BFGS fits: a second torch thread on busy cores makes each one 50 times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_zero_shot_fits_a_shared_probe_once_for_all_its_domains(monkeypatch, capsys, tmp_path, one_thread):
    """toy-shapes and its 3 domains share one 16-shot training set: one weight-decay search, one
    training-feature extraction; every domain's accuracy is that of the probe fitted for it alone."""
    import json
    from types import SimpleNamespace

    import torch

    import vlprompt.backbones
    import vlprompt.datasets
    import vlprompt.evaluation
    import vlprompt.evaluation.linear_probe as lp
    import vlprompt.zeroshot

    classes = ["circle", "square", "star"]
    names = ["toy-shapes", "toy-shapes-sketch", "toy-shapes-night", "toy-shapes-noise"]

    class Fake(SimpleNamespace):  # a dataset: its name, split and classes
        def __len__(self) -> int:
            return 30

    def dataset(name, split="test", **_):
        return Fake(name=name, split=split, classnames=list(classes), is_test_only=name != "toy-shapes")

    extracted = []

    def features(clip, ds, batch_size, desc=None):  # class clusters, a different shift per (dataset, split)
        extracted.append((ds.name, ds.split))
        g = torch.Generator().manual_seed(names.index(ds.name) * 10 + ("train", "val", "test").index(ds.split))
        labels = torch.arange(30) % 3
        return torch.eye(3, 8)[labels] + torch.randn(30, 8, generator=g), labels  # overlapping: fits converge

    fits = []
    real_fit = lp.fit_linear_probe

    def counted_fit(*args, **kwargs):
        fits.append(1)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(vlprompt.backbones, "build_clip", lambda *a, **k: SimpleNamespace(image_size=32))
    monkeypatch.setattr(vlprompt.datasets, "build_test_transform", lambda size: None)
    monkeypatch.setattr(vlprompt.datasets, "build_dataset", dataset)
    monkeypatch.setattr(vlprompt.evaluation, "extract_features", features)
    monkeypatch.setattr(vlprompt.zeroshot, "class_text_features", lambda clip, c, t: torch.eye(3, 8))
    monkeypatch.setattr(lp, "fit_linear_probe", counted_fit)
    out = tmp_path / "zs.json"
    load_tool("zero_shot").main(["--linear-probe", "--datasets", *names, "--out", str(out)])
    assert len(fits) == len(lp.DEFAULT_WEIGHT_DECAYS) + 1  # one search and one final fit, not one per domain
    assert [e for e in extracted if e[1] != "test"] == [("toy-shapes", "train"), ("toy-shapes", "val")]
    rows = json.loads(out.read_text())["rows"]
    monkeypatch.setattr(lp, "fit_linear_probe", real_fit)
    train, val = features(None, dataset("toy-shapes", "train"), 1), features(None, dataset("toy-shapes", "val"), 1)
    assert {row["probe_trained_on"] for row in rows} == {"toy-shapes"}
    row = rows[-1]  # the number a probe fitted for this domain alone gives
    acc, wd = lp.linear_probe_accuracy(train, features(None, dataset(row["dataset"], "test"), 1), 3, val=val)
    assert (row["linear_probe"], row["probe_weight_decay"]) == (round(acc, 2), wd)


@pytest.mark.parametrize("key", ["data_root", "input_files"])
def test_where_the_data_lives_is_not_a_setting(key):
    from vlprompt.engine.sweep import NOT_SETTINGS, option_settings

    assert key in NOT_SETTINGS
    assert option_settings(["data_root=/data", "adapter.steps=0"]) == ["adapter.steps=0"]


def test_multitask_table_names_the_users_options_not_the_sweeps(tmp_path, monkeypatch):
    import json

    from vlprompt import runs

    def fake_run(cmd: list[str], log: Path, cwd: Path | None = None) -> None:  # train.py / test.py's outputs
        work_dir = Path(cmd[cmd.index("--work-dir") + 1])
        work_dir.mkdir(parents=True, exist_ok=True)
        out = Path(cmd[cmd.index("--out") + 1]) if "--out" in cmd else work_dir / "results.json"
        out.write_text(json.dumps({"metrics": {"accuracy/top1": 40.0}}))

    monkeypatch.setattr(runs, "run_logged", fake_run)
    load_tool("multitask").main(["--families", "mcoop", "--shots", "1", "--seeds", "1", "--work-root", str(tmp_path),
                                 "--cfg-options", "train_cfg.max_epochs=1"])
    md = (tmp_path / "multitask.md").read_text()
    assert md.rstrip().endswith(f"{NOTE}: train_cfg.max_epochs=1")  # not its seed, shots or source prompt
    assert {r["settings"] for r in csv.DictReader(io.StringIO((tmp_path / "multitask.csv").read_text()))} == {
        "train_cfg.max_epochs=1"}
