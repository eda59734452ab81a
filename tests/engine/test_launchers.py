"""Sweeps launched in parallel through submitit (issue 27): ``--launcher local`` gives the sequential sweep's
table exactly, a failed run is named with its logs while the others finish and a rerun retries only it, and two
sweeps started at once on one work root never train a run twice. The real-Slurm test is in
tests/slurm/test_slurm_launcher.py."""

from __future__ import annotations

import csv
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


def test_a_failed_run_is_named_the_others_finish_and_a_rerun_retries_only_it(tmp_path, capsys):
    broken = tmp_path / "coop" / "toy-shapes" / "shots1" / "seed2"
    broken.mkdir(parents=True)
    (broken / "epoch_1.pth").write_bytes(b"not a checkpoint")  # --resume finds it, and it does not load
    with pytest.raises(SystemExit) as stop:
        run_tool(lambda: _fewshot(tmp_path, "--launcher", "local", "--jobs", "2"), argv=[])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "1 of 2 runs failed" in err and "toy-shapes 1-shot seed 2" in err and str(broken / "sweep.log") in err
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
