"""Sweeps launched in parallel through submitit (issue 27): ``--launcher local`` gives the sequential sweep's
table exactly (few-shot, test-time adaptation, active learning), a failed run is named with its logs while the
others finish and a rerun retries only it, two sweeps started at once on one work root never train a run twice,
and a job's process does not import torch. The real-Slurm test is in tests/slurm/test_slurm_launcher.py."""

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

from vlprompt.cli import run_tool

TINY = ["model.backbone.name=test-tiny", "model.backbone.pretrained=None"]


def _fewshot(root: Path, *launch: str) -> list[dict]:
    """A 2-run few-shot sweep (toy-shapes, 1 shot, seeds 1 and 2, one epoch on the tiny random CLIP)."""
    return load_tool("fewshot").main(["--method", "coop", "--datasets", "toy-shapes", "--shots", "1", "--seeds", "1",
                                      "2", "--epochs", "1", "--work-root", str(root), *launch, "--cfg-options", *TINY])


def _table(root: Path) -> list[dict]:
    path = next(root.rglob("fewshot.csv"))
    return [{k: v for k, v in row.items() if k != "settings"} for row in csv.DictReader(path.open())]


def _trainings(run_dir: Path) -> int:
    """How many times a run's tools/train.py was started (its sweep.log names each command)."""
    log = run_dir / "sweep.log"
    return sum("tools/train.py" in line for line in log.read_text().splitlines() if line.startswith("$ "))


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    root = tmp_path_factory.mktemp("sequential")
    return root, _fewshot(root)


def test_the_local_launcher_gives_the_sequential_table_exactly(sequential, tmp_path):
    seq_root, seq_runs = sequential
    runs = _fewshot(tmp_path, "--launcher", "local", "--jobs", "2")
    assert [r["top1"] for r in runs] == [r["top1"] for r in seq_runs]  # bit-identical on the CPU
    assert _table(tmp_path) == _table(seq_root)
    for seed in (1, 2):
        run_dir = tmp_path / "coop" / "toy-shapes" / "shots1" / f"seed{seed}"
        assert (run_dir / "submitit").is_dir() and _trainings(run_dir) == 1  # its job's files in its folder
    assert (tmp_path / "coop" / "toy-shapes" / "zero_shot" / "submitit").is_dir()  # the zero-shot reference: a job too


def test_a_failed_run_is_named_the_others_finish_and_a_rerun_retries_only_it(tmp_path, capsys):
    broken = tmp_path / "coop" / "toy-shapes" / "shots1" / "seed2"
    broken.mkdir(parents=True)
    (broken / "epoch_1.pth").write_bytes(b"not a checkpoint")  # --resume finds it, and it does not load
    with pytest.raises(SystemExit) as stop:
        run_tool(lambda: _fewshot(tmp_path, "--launcher", "local", "--jobs", "2"), argv=[])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    # the 2 runs and the zero-shot reference
    assert "1 of 3 runs failed" in err and "toy-shapes 1-shot seed 2" in err and str(broken / "sweep.log") in err
    finished = tmp_path / "coop" / "toy-shapes" / "shots1" / "seed1"
    assert (finished / "sweep_result.json").is_file() and not (broken / "sweep_result.json").exists()

    (broken / "epoch_1.pth").unlink()
    runs = _fewshot(tmp_path, "--launcher", "local", "--jobs", "2")
    assert len(runs) == 2 and _trainings(finished) == 1  # reused, not trained again
    assert (broken / "sweep_result.json").is_file()


@pytest.mark.slow  # two sweeps side by side, each waiting for the other's runs (about 40 s)
def test_two_sweeps_at_once_on_one_work_root_never_train_a_run_twice(tmp_path):
    code = ("import sys; sys.path.insert(0, 'tests'); from tool_loader import load_tool; "
            "load_tool('fewshot').main(sys.argv[1:])")
    argv = ["--method", "coop", "--datasets", "toy-shapes", "--shots", "1", "--seeds", "1", "2", "--epochs", "1",
            "--work-root", str(tmp_path), "--launcher", "local", "--jobs", "2", "--cfg-options", *TINY]
    env = {**os.environ, "VLPROMPT_PROGRESS": "0"}
    sweeps = [subprocess.Popen([sys.executable, "-c", code, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in sweeps]
    assert [p.returncode for p in sweeps] == [0, 0], outputs
    for seed in (1, 2):
        assert _trainings(tmp_path / "coop" / "toy-shapes" / "shots1" / f"seed{seed}") == 1, outputs
    assert all("| toy-shapes |" in out for out in outputs)


def test_a_job_process_does_not_import_torch(sequential, tmp_path):
    """What a launched job unpickles (its call: the tool's work function, its planned run) imports the light
    vlprompt.runs, not torch or mmengine: a job starts its run's tools/train.py in a fraction of a second."""
    _fewshot(tmp_path, "--launcher", "local", "--jobs", "2")
    submitted = next((tmp_path / "coop" / "toy-shapes" / "shots1" / "seed1" / "submitit").glob("*_submitted.pkl"))
    code = ("import pickle, sys; sys.path.insert(0, 'tools'); pickle.load(open(sys.argv[1], 'rb')); "
            "print(sorted(m for m in ('torch', 'mmengine', 'vlprompt.engine') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(submitted)], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


TTA = ["model.backbone.name=test-tiny", "model.backbone.pretrained=None", "views.n_views=10"]


def _tta(root: Path, *launch: str) -> list[dict]:
    return load_tool("tta").main(["configs/tpt/toy_shapes.py", "--datasets", "toy-shapes", "toy-hues", "--limit",
                                  "3", "--work-dir", str(root), *launch, "--cfg-options", *TTA])


def _predictions(root: Path) -> dict[str, list]:
    return {p.parent.name: json.loads(p.read_text())["predictions"] for p in sorted(root.glob("*/results.json"))}


def test_tta_runs_each_dataset_as_a_job_with_the_sequential_results(tmp_path):
    seq = _tta(tmp_path / "seq")
    par = _tta(tmp_path / "par", "--launcher", "local", "--jobs", "2")
    keep = ("method", "dataset", "samples", "of", "classes", "views", "top1")
    assert [{k: r[k] for k in keep} for r in par] == [{k: r[k] for k in keep} for r in seq]
    assert _predictions(tmp_path / "par") == _predictions(tmp_path / "seq") and len(_predictions(tmp_path / "seq")) == 2
    assert (tmp_path / "par" / "tta.md").is_file()
    again = _tta(tmp_path / "par", "--launcher", "local", "--jobs", "2")  # finished: reused, not run again
    assert [r["top1"] for r in again] == [r["top1"] for r in par]
    log = (tmp_path / "par" / "toy_shapes_toy_hues" / "sweep.log").read_text()
    assert sum(line.startswith("$ ") for line in log.splitlines()) == 1
    other = load_tool("tta").main(["configs/tpt/toy_shapes.py", "--datasets", "toy-hues", "--limit", "2",
                                   "--work-dir", str(tmp_path / "par" / "toy_shapes_toy_hues"), "--launcher",
                                   "local", "--cfg-options", *TTA])
    assert other[0]["samples"] == 2  # another --limit is another run: made again, not reused


@pytest.mark.slow  # two strategies' rounds, sequential and launched (about 45 s)
def test_active_runs_each_strategy_and_seed_as_a_job_with_the_sequential_table(tmp_path):
    tool = load_tool("active")
    fast = ["model.backbone.name=test-tiny", "model.backbone.pretrained=None", "train_cfg.max_epochs=1",
            "test_dataloader.batch_size=400"]
    argv = ["configs/active/toy_hues.py", "--samplers", "random", "entropy", "--pcb", "off", "--seeds", "1",
            "--rounds", "2"]
    tool.main([*argv, "--work-root", str(tmp_path / "seq"), "--cfg-options", *fast])
    tool.main([*argv, "--work-root", str(tmp_path / "par"), "--launcher", "local", "--jobs", "2", "--cfg-options",
               *fast])
    assert (tmp_path / "par" / "active.csv").read_text() == (tmp_path / "seq" / "active.csv").read_text()
    for strategy in ("random", "entropy"):
        states = [json.loads((tmp_path / w / strategy / "seed1" / "active_state.json").read_text())
                  for w in ("seq", "par")]
        assert [r["selected"] for r in states[0]["rounds"]] == [r["selected"] for r in states[1]["rounds"]]


def test_launcher_options_pass_on_to_another_sweep_tool():
    """tools/compare_methods.py runs tools/base2novel.py for missing zero-shot rows with its own launcher options."""
    import argparse

    from vlprompt.launch import add_launcher_arguments, launch_settings, launcher_argv

    parser = argparse.ArgumentParser()
    add_launcher_arguments(parser)
    args = parser.parse_args(["--launcher", "slurm", "--partition", "gpu", "--mem", "32", "--cpus-per-run", "4",
                              "--slurm-extra", "qos=high", "constraint=a100", "--no-wait", "--time", "30"])
    assert launch_settings(parser.parse_args(launcher_argv(args))) == launch_settings(args)
    assert launch_settings(parser.parse_args(launcher_argv(args))).slurm_extra == {"qos": "high", "constraint": "a100"}
