"""One name per dataset (issue 31, item 3): every spelling of a dataset makes the same run folder, config
path and table row; an unknown dataset, method or config path is answered with the closest names, and a
mistyped config path before torch is imported. Training is faked: the sweeps' ``run_logged`` writes what
train.py would."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT
from tool_loader import load_tool

from vlprompt import cli, runs, workdir
from vlprompt.engine import sweep

base2novel = load_tool("base2novel")  # tools/base2novel.py, by its file
fewshot = load_tool("fewshot")
compare_methods = load_tool("compare_methods")
train = load_tool("train")
tta = load_tool("tta")
zero_shot = load_tool("zero_shot")

TOY = "toy-shapes"
LEAF = "toy_shapes.py"


def _fake_run_logged(cmd: list[str], log: Path, cwd: Path | None = None) -> None:
    """What train.py / test.py write, without training."""
    work_dir = Path(cmd[cmd.index("--work-dir") + 1])
    work_dir.mkdir(parents=True, exist_ok=True)
    if "--out" in cmd:
        Path(cmd[cmd.index("--out") + 1]).write_text(json.dumps({"metrics": {"accuracy/top1": 40.0}}))
    else:
        metrics = {"base/top1": 70.0, "novel/top1": 60.0, "accuracy/top1": 50.0}
        (work_dir / "results.json").write_text(json.dumps({"metrics": metrics}))


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(runs, "run_logged", _fake_run_logged)  # the tools take run_logged from here
    monkeypatch.delenv(workdir.HELD_ENV, raising=False)


def _in_subprocess(tool: str, *args: str) -> tuple[str, bool]:
    """Run ``tools/<tool>`` as its ``__main__`` in a fresh interpreter: its stderr, and whether torch was
    imported by the time it exited."""
    code = ("import runpy, sys\n"
            f"sys.argv = {[f'tools/{tool}', *args]!r}\n"
            "try:\n"
            f"    runpy.run_path('tools/{tool}', run_name='__main__')\n"
            "except SystemExit as exit:\n"
            "    print('exit', exit.code)\n"
            "print('torch imported:', 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert f"exit {cli.EXIT_USER_ERROR}" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    return proc.stderr, "torch imported: True" in proc.stdout


# ------------------------------------------------------------------------------------ one name, one run
def test_the_light_table_of_dataset_names_is_the_registry():
    from vlprompt import names
    from vlprompt.datasets.builder import dataset_spellings

    assert dataset_spellings() == names.DATASET_SPELLINGS, (
        "vlprompt/names.py DATASET_SPELLINGS differs from the registered readers: copy "
        "vlprompt.datasets.builder.dataset_spellings() into it")


@pytest.mark.parametrize("spelling", ["toy_shapes", "toy-shapes", "Toy_Shapes", "TOY-SHAPES"])
def test_every_spelling_is_the_one_name(spelling):
    from vlprompt.datasets import canonical_name

    assert cli.dataset_arguments([spelling]) == [TOY] == [canonical_name(spelling)]
    assert cli.dataset_arguments(["pets", "OxfordPets", "oxford_pets", "dtd", "DTD"]) == ["oxford-pets", "dtd"]


def test_base2novel_aliases_are_one_run_folder_and_one_table_row(tmp_path, fake):
    runs = base2novel.main(["--method", "coop", "--datasets", "toy_shapes", "toy-shapes", "Toy-Shapes",
                            "--seeds", "1", "--work-root", str(tmp_path)])
    assert [r["dataset"] for r in runs] == [TOY]
    assert sorted(p.name for p in (tmp_path / "coop").iterdir() if p.is_dir()) == [TOY]  # the folder of before
    with open(tmp_path / "coop" / "base2novel.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["dataset"] for r in rows if r["seed"] == "1"] == [TOY]  # one row per dataset and seed

    # a later sweep spelled the other way reuses that run rather than making another
    again = base2novel.main(["--method", "coop", "--datasets", "toy_shapes", "--seeds", "1",
                             "--work-root", str(tmp_path)])
    assert again[0]["seconds"] == runs[0]["seconds"] and sorted(p.name for p in (tmp_path / "coop").iterdir()
                                                               if p.is_dir()) == [TOY]


def test_fewshot_aliases_are_one_run_folder(tmp_path, fake, monkeypatch):
    monkeypatch.setattr(fewshot, "zero_shot_run", lambda dataset, out_dir, options: None)  # no zero-shot row
    runs = fewshot.main(["--method", "coop", "--datasets", "toy_shapes", "toy-shapes", "--shots", "1",
                         "--seeds", "1", "--epochs", "1", "--work-root", str(tmp_path)])
    assert [r["dataset"] for r in runs] == [TOY]
    assert [p.name for p in (tmp_path / "coop").iterdir() if p.is_dir()] == [TOY]


def test_compare_methods_filters_by_any_spelling(tmp_path, fake):
    base2novel.main(["--method", "coop", "--datasets", TOY, "--seeds", "1", "--work-root", str(tmp_path)])
    table = compare_methods.main(["--methods", "coop", "--datasets", "toy_shapes", "--work-root", str(tmp_path)])
    assert f"| {TOY} " in table


class _Stop(Exception):
    pass


def test_zero_shot_aliases_are_one_row(monkeypatch):
    """The datasets zero_shot.py tests on (its rows), caught where its loop over them starts."""
    import types

    import tqdm

    import vlprompt.backbones
    import vlprompt.datasets

    monkeypatch.setattr(vlprompt.backbones, "build_clip", lambda *a, **k: types.SimpleNamespace(image_size=32))
    monkeypatch.setattr(vlprompt.datasets, "build_dataset", lambda name, **kwargs: name)

    def rows(items, **kwargs):
        raise _Stop([name for name, _ in items])

    monkeypatch.setattr(tqdm, "tqdm", rows)
    with pytest.raises(_Stop) as stop:
        zero_shot.main(["--datasets", "toy_shapes", "toy-shapes", "Toy-Shapes-Night", "--device", "cpu"])
    assert stop.value.args[0] == [TOY, "toy-shapes-night"]


def test_tta_aliases_are_one_run(monkeypatch):
    import vlprompt.adapters.run

    monkeypatch.chdir(ROOT)
    seen = []
    monkeypatch.setattr(vlprompt.adapters.run, "run_tta", lambda cfgs, *args: (seen.extend(cfgs), ([], 1))[1])
    tta.main(["configs/tpt/toy_shapes.py", "--datasets", "toy_shapes_night", "toy-shapes-night"])
    assert [c.test_dataloader.dataset.name for c in seen] == ["toy-shapes-night"]


def test_a_composed_run_has_one_path_and_one_work_dir_whatever_the_spelling(monkeypatch):
    monkeypatch.chdir(ROOT)
    from vlprompt.engine import load_config

    assert train.parse_args(["--method", "coop", "--dataset", "Toy_Shapes"]).config == "configs/coop/toy_shapes.py"
    assert train.parse_args(["configs/coop/toy-shapes.py"]).config == "configs/coop/toy_shapes.py"
    one, other = load_config("configs/coop/toy-shapes.py"), load_config("configs/coop/toy_shapes.py")
    assert (one.work_dir, one.filename) == (other.work_dir, other.filename)
    assert sweep.config_path("coop", "Toy_Shapes") == sweep.config_path("coop", TOY) == ROOT / f"configs/coop/{LEAF}"


# ------------------------------------------------------------------------------------------ suggestions
def test_an_unknown_dataset_names_the_closest_datasets_at_once():
    err, torch_imported = _in_subprocess("base2novel.py", "--method", "coop", "--datasets", "toyshapes")
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: --datasets toyshapes: unknown dataset 'toyshapes' (did you mean toy-shapes or ")
    known = line.split("; known: ", 1)[1].split(", ")
    assert TOY in known and not {"toy_shapes", "imagenet_xd"} & set(known)  # dataset names, not config files
    assert not torch_imported


@pytest.mark.parametrize("tool", ["base2novel.py", "fewshot.py"])
def test_an_unknown_method_names_the_closest_methods_and_all_of_them_at_once(tool):
    err, torch_imported = _in_subprocess(tool, "--method", "cop", "--datasets", TOY)
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: --method cop: unknown method 'cop' (did you mean coop or ")
    methods = line.split("; methods: ", 1)[1].split(", ")
    assert {"coop", "gram/coop", "maple", "zsclip"} <= set(methods)
    assert not torch_imported


def test_a_method_variant_and_another_case_are_methods_too():
    assert cli.method_argument("gram/coop") == "gram/coop" and cli.method_argument("CoOp") == "coop"
    with pytest.raises(cli.UsageError, match=r"unknown method 'gram/cop' \(did you mean gram/coop"):
        cli.method_argument("gram/cop")


@pytest.mark.parametrize(("argv", "closest"), [
    (["train.py", "configs/coop/toy_shape.py"], "configs/coop/toy_shapes.py"),
    (["train.py", "configs/cop/toy_shapes.py"], "configs/coop/toy_shapes.py"),
    (["test.py", "configs/coop/toy_shape.py", "none"], "configs/coop/toy_shapes.py"),
    (["tta.py", "configs/tpt/toy_shape.py"], "configs/tpt/toy_shapes.py"),
    (["meta_train.py", "configs/gram/meta_coop_toi.py"], "configs/gram/meta_coop_toy.py"),
    (["active.py", "configs/active/toy_hue.py"], "configs/active/toy_hues.py"),
])
def test_a_mistyped_config_path_is_answered_before_torch_with_the_closest_config(argv, closest):
    err, torch_imported = _in_subprocess(*argv)
    line = err.strip().splitlines()[-1]
    # the closest first (configs/tpt/toy_shape.py also suggests configs/ctpt/toy_shapes.py after it)
    assert line.startswith(f"error: config not found: {argv[1]} (did you mean {closest}"), line
    assert not torch_imported
