"""A real Slurm, not a mock (issue 27): a toy base-to-novel sweep of 2 datasets x 2 seeds submitted through
``--launcher slurm`` (one submitit job per run) gives the sequential sweep's table. tests/slurm/
start_local_slurm.sh starts a one-node Slurm on this machine (``.ci/run`` does before the slow tests); without a
Slurm the test is skipped, naming the script."""

from __future__ import annotations

import csv
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from tool_loader import load_tool

OPTIONS = ["model.backbone.name=test-tiny", "model.backbone.pretrained=None", "train_cfg.max_epochs=1"]


def _slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return False
    return any(s.rstrip("*") in ("idle", "mixed", "allocated", "completing") for s in states)


pytestmark = [pytest.mark.slow, pytest.mark.skipif(not _slurm_up(), reason="no Slurm here: run "
                                                   "tests/slurm/start_local_slurm.sh (as root) first")]


def _sweep(root: Path, *launch: str) -> list[dict]:
    return load_tool("base2novel").main(["--method", "coop", "--datasets", "toy-shapes", "toy-hues", "--seeds", "1",
                                         "2", "--work-root", str(root), *launch, "--cfg-options", *OPTIONS])


def _table(root: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "settings"}
            for row in csv.DictReader(next(root.rglob("base2novel.csv")).open())]


def test_a_sweep_through_a_real_slurm_gives_the_sequential_table(tmp_path, capsys):
    sequential = _sweep(tmp_path / "sequential")
    start = time.perf_counter()
    slurm = _sweep(tmp_path / "slurm", "--launcher", "slurm", "--partition", "debug", "--gpus-per-run", "0",
                   "--cpus-per-run", "1", "--time", "30")
    took = time.perf_counter() - start
    assert [(r["dataset"], r["seed"], r["base"], r["novel"]) for r in slurm] == \
        [(r["dataset"], r["seed"], r["base"], r["novel"]) for r in sequential]
    assert _table(tmp_path / "slurm") == _table(tmp_path / "sequential")
    jobs = sorted((tmp_path / "slurm").rglob("submitit/*_submitted.pkl"))
    assert len(jobs) == 4  # one Slurm job per run, its files in the run folder
    assert not list((tmp_path / "slurm").rglob("sweep_job.json"))  # collected: no job left recorded
    print(f"slurm sweep of 4 runs: {took:.1f} s; jobs: {[p.name.split('_')[0] for p in jobs]}")
    print(capsys.readouterr().out)


def test_no_wait_submits_and_a_rerun_collects(tmp_path, capsys):
    root = tmp_path / "no_wait"
    with pytest.raises(SystemExit) as stop:
        load_tool("fewshot").main(["--method", "coop", "--datasets", "toy-shapes", "--shots", "1", "--seeds", "1",
                                   "--epochs", "1", "--work-root", str(root), "--launcher", "slurm", "--no-wait",
                                   "--partition", "debug", "--gpus-per-run", "0", "--cfg-options", *OPTIONS[:2]])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "2 runs submitted or still queued" in out and "zero_shot: Slurm job" in out  # the run and its zero-shot
    records = sorted(root.rglob("sweep_job.json"))
    assert len(records) == 2
    for _ in range(180):  # the jobs run (seconds each), then their folders hold the results
        if all((record.parent / "sweep_result.json").is_file() for record in records):
            break
        time.sleep(1)
    runs = load_tool("fewshot").main(["--method", "coop", "--datasets", "toy-shapes", "--shots", "1", "--seeds", "1",
                                      "--epochs", "1", "--work-root", str(root), "--launcher", "slurm",
                                      "--partition", "debug", "--gpus-per-run", "0", "--cfg-options", *OPTIONS[:2]])
    assert len(runs) == 1 and not any(r.exists() for r in records)  # collected: reused, not resubmitted
    assert len(list(root.rglob("submitit/*_submitted.pkl"))) == 2
