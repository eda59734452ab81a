"""Sweeps reuse a finished run only when its recorded config matches, and a lock keeps two
processes from training into one run folder at once. Training is faked: the tools' ``run_logged``
is replaced by a function that writes what train.py / test.py would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import ROOT
from tool_loader import load_tool

from vlprompt import runs, workdir
from vlprompt.runs import RESULT_FILE
from vlprompt.workdir import LOCK_FILE, WorkDirLocked, work_dir_lock

base2novel = load_tool("base2novel")  # tools/base2novel.py, by its file
fewshot = load_tool("fewshot")  # tools/fewshot.py, by its file
transfer = load_tool("transfer")  # tools/transfer.py, by its file
class FakeTraining:
    """Stands in for ``run_logged``: writes the outputs of train.py / test.py and records each call."""

    def __init__(self):
        self.calls: list[list[str]] = []  # training runs and the tests of trained prompts
        self.zero_shot: list[list[str]] = []  # tools/test.py CONFIG none: the zero-shot references

    def __call__(self, cmd: list[str], log: Path, cwd: Path | None = None) -> None:
        work_dir = Path(cmd[cmd.index("--work-dir") + 1])
        lock = work_dir / LOCK_FILE  # the sweep holds the run folder's lock while it trains
        assert json.loads(lock.read_text())["pid"] == os.getpid(), f"{lock} not held by the sweep"
        assert str(lock.resolve()) in os.environ[workdir.HELD_ENV]  # so that train.py runs under it
        (self.zero_shot if "none" in cmd else self.calls).append(cmd)
        work_dir.mkdir(parents=True, exist_ok=True)
        if "--out" in cmd:  # tools/test.py
            Path(cmd[cmd.index("--out") + 1]).write_text(json.dumps({"metrics": {"accuracy/top1": 40.0,
                                                                                  "accuracy/ece": 7.0}}))
        elif "--no-test" in cmd:
            (work_dir / "learned.safetensors").write_text("fake")
        else:
            metrics = {"base/top1": 70.0, "novel/top1": 60.0, "accuracy/top1": 50.0, "base/ece": 12.0,
                       "novel/ece": 18.0, "accuracy/ece": 9.0}
            (work_dir / "results.json").write_text(json.dumps({"metrics": metrics}))


@pytest.fixture
def fake(monkeypatch):
    fake = FakeTraining()
    monkeypatch.setattr(runs, "run_logged", fake)  # the tools take run_logged from here when they run
    monkeypatch.delenv(workdir.HELD_ENV, raising=False)
    return fake


def _b2n(root: Path, *extra: str) -> list[dict]:
    return base2novel.main(["--method", "coop", "--datasets", "toy-shapes", "--work-root", str(root), *extra])


def test_base2novel_reuses_only_matching_runs_and_refuses_others_before_training(tmp_path, fake, capsys):
    _b2n(tmp_path, "--seeds", "1")
    assert len(fake.calls) == 1
    run_dir = tmp_path / "coop" / "toy-shapes" / "seed1"
    record = json.loads((run_dir / RESULT_FILE).read_text())
    assert record["config"]["optim_wrapper"]["optimizer"]["lr"] == 0.002
    assert record["config"]["randomness"]["seed"] == 1 and "work_dir" not in record["config"]
    assert len(record["config_hash"]) == 64 and record["config_file"] == "configs/coop/toy_shapes.py"
    assert not (run_dir / LOCK_FILE).exists()  # released after the run

    capsys.readouterr()
    runs = _b2n(tmp_path, "--seeds", "1")
    assert len(fake.calls) == 1 and runs[0]["base"] == 70.0
    assert (runs[0]["base_ece"], runs[0]["novel_ece"]) == (12.0, 18.0)  # train.py's metrics, into the report
    report = (tmp_path / "coop" / "base2novel.md").read_text()
    assert "| toy-shapes | 1 | 70.00 | 60.00 | 64.62 | 12.00 | 18.00 |" in report
    out = capsys.readouterr()
    assert "toy-shapes seed 1: base 70.00  novel 60.00  HM 64.62  (reused)" in out.out + out.err
    assert "1 runs (1 reused)" in out.out

    # other settings: seed 2 (not run yet) comes first, and must not start either
    with pytest.raises(SystemExit) as err:
        _b2n(tmp_path, "--seeds", "2", "1", "--cfg-options", "optim_wrapper.optimizer.lr=0.01")
    assert str(err.value) == (f"{run_dir} was run with optim_wrapper.optimizer.lr=0.002, this sweep asks for 0.01; "
                              "use --overwrite to retrain it or another --work-root\n(nothing was trained)")
    assert len(fake.calls) == 1 and not (tmp_path / "coop" / "toy-shapes" / "seed2").exists()

    mine = tmp_path / "coop" / "notes.txt"
    mine.write_text("the user's")
    capsys.readouterr()
    _b2n(tmp_path, "--seeds", "1", "--cfg-options", "optim_wrapper.optimizer.lr=0.01", "--overwrite")
    assert len(fake.calls) == 2 and mine.read_text() == "the user's"
    assert (f"--overwrite: retraining: {run_dir} was run with optim_wrapper.optimizer.lr=0.002, this sweep asks "
            "for 0.01") in capsys.readouterr().err
    assert json.loads((run_dir / RESULT_FILE).read_text())["config"]["optim_wrapper"]["optimizer"]["lr"] == 0.01


def test_a_result_without_a_recorded_config_is_refused_until_overwritten(tmp_path, fake):
    run_dir = tmp_path / "coop" / "toy-shapes" / "seed1"
    run_dir.mkdir(parents=True)
    old = {"method": "coop", "dataset": "toy-shapes", "seed": 1, "base": 1.0, "novel": 2.0, "hm": 1.33, "seconds": 5}
    (run_dir / RESULT_FILE).write_text(json.dumps(old))
    with pytest.raises(SystemExit) as err:
        _b2n(tmp_path, "--seeds", "1")
    assert str(err.value).startswith(f"{run_dir} finished before sweeps recorded their config (its {RESULT_FILE} "
                                     "has none), so whether it matches this sweep is unknown; use --overwrite")
    assert fake.calls == []
    runs = _b2n(tmp_path, "--seeds", "1", "--overwrite")
    assert len(fake.calls) == 1 and runs[0]["base"] == 70.0 and "config" in runs[0]


def test_several_differences_and_several_runs_are_all_named(tmp_path, fake):
    _b2n(tmp_path, "--seeds", "1", "2")
    with pytest.raises(SystemExit) as err:
        _b2n(tmp_path, "--seeds", "1", "2", "--cfg-options", "train_cfg.max_epochs=3", "model.learner.n_ctx=8")
    lines = str(err.value).splitlines()
    for seed, line in zip((1, 2), lines[:2], strict=True):
        assert line.startswith(f"{tmp_path / 'coop' / 'toy-shapes' / f'seed{seed}'} was run with "
                               "model.learner.n_ctx=4, train_cfg.max_epochs=50; this sweep asks for "
                               "model.learner.n_ctx=8, train_cfg.max_epochs=3")
    assert lines[1].endswith("; use --overwrite to retrain them or another --work-root")
    assert len(fake.calls) == 2


def test_fewshot_refuses_a_run_made_with_other_epochs(tmp_path, fake):
    args = ["--method", "coop", "--datasets", "toy-shapes", "--shots", "1", "--seeds", "1", "--work-root",
            str(tmp_path)]
    fewshot.main([*args, "--epochs", "2"])
    fewshot.main([*args, "--epochs", "2"])
    assert len(fake.calls) == 1 and len(fake.zero_shot) == 1  # the zero-shot reference is reused too
    with pytest.raises(SystemExit) as err:
        fewshot.main([*args, "--epochs", "3"])
    assert (f"{tmp_path / 'coop' / 'toy-shapes' / 'shots1' / 'seed1'} was run with train_cfg.max_epochs=2, "
            "this sweep asks for 3; use --overwrite") in str(err.value)
    assert len(fake.calls) == 1
    runs = fewshot.main([*args, "--epochs", "3", "--overwrite"])
    assert len(fake.calls) == 2 and runs[0]["config"]["train_cfg"]["max_epochs"] == 3
    assert runs[0]["ece"] == 9.0 and "few-shot ECE" in (tmp_path / "coop" / "fewshot.md").read_text()


def test_transfer_records_its_config_and_refuses_old_unrecorded_outputs(tmp_path, fake):
    args = ["--method", "coop", "--protocol", "toy-domain-generalization", "--seeds", "1", "--work-root",
            str(tmp_path)]
    transfer.main(args)
    assert len(fake.calls) == 5  # train on the source, test on 4 targets
    run_dir = tmp_path / "coop" / "toy-domain-generalization" / "seed1"
    assert json.loads((run_dir / RESULT_FILE).read_text())["accuracy"]["toy-shapes-night"] == 40.0
    transfer.main(args)
    assert len(fake.calls) == 5
    with pytest.raises(SystemExit) as err:
        transfer.main([*args, "--cfg-options", "train_cfg.max_epochs=1"])
    assert f"{run_dir} was run with train_cfg.max_epochs=" in str(err.value) and len(fake.calls) == 5

    (run_dir / RESULT_FILE).unlink()  # what an older transfer.py left: the outputs, no record
    with pytest.raises(SystemExit) as err:
        transfer.main(args)
    assert str(err.value).startswith(f"{run_dir} holds the outputs of a finished run (learned.safetensors, "
                                     f"test_toy-shapes.json, ")
    assert f"but no {RESULT_FILE} recording the config they came from" in str(err.value)
    transfer.main([*args, "--overwrite"])
    assert len(fake.calls) == 10


# --- the work dir lock -------------------------------------------------------------------------

_HOLDER = textwrap.dedent("""
    import importlib.util, os, sys
    sys.path.insert(0, {root!r})  # the light vlprompt package, without vlprompt.engine's heavy imports
    spec = importlib.util.spec_from_file_location("vlprompt.workdir", {path!r})
    workdir = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(workdir)
    mode = sys.argv[2]
    try:
        with workdir.work_dir_lock(sys.argv[1]):
            print("held", flush=True)
            if mode == "hold":
                sys.stdin.read()  # until the test closes our stdin
            elif mode == "die":
                os._exit(0)  # killed while holding it: the lock file stays behind
    except workdir.WorkDirLocked as err:
        print(err, flush=True)
        sys.exit(3)
""").format(path=str(ROOT / "vlprompt" / "workdir.py"), root=str(ROOT))


def _env(inherit: bool) -> dict:
    env = dict(os.environ)
    if not inherit:
        env.pop(workdir.HELD_ENV, None)
    return env


def _lock_in_child(folder: Path, mode: str, inherit: bool = False, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _HOLDER, str(folder), mode], capture_output=True, text=True,
                          env=_env(inherit), timeout=60, **kw)


def test_a_second_process_cannot_take_a_held_lock_but_a_child_runs_under_it(tmp_path, monkeypatch):
    monkeypatch.delenv(workdir.HELD_ENV, raising=False)
    with work_dir_lock(tmp_path / "run"):
        other = _lock_in_child(tmp_path / "run", "once")
        assert other.returncode == 3
        assert other.stdout.startswith(f"{tmp_path / 'run'} is in use: pid {os.getpid()} on ")
        assert "wait for it to finish or use another work dir" in other.stdout
        child = _lock_in_child(tmp_path / "run", "once", inherit=True)  # e.g. train.py started by a sweep
        assert child.returncode == 0 and child.stdout == "held\n"
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    assert _lock_in_child(tmp_path / "run", "once").returncode == 0  # free again


def test_a_lock_left_by_a_dead_process_is_taken_over_saying_so(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(workdir.HELD_ENV, raising=False)
    dead = _lock_in_child(tmp_path, "die")
    assert dead.returncode == 0
    left = json.loads((tmp_path / LOCK_FILE).read_text())
    start = time.perf_counter()
    with work_dir_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert f"{tmp_path}: taking over the stale lock of pid {left['pid']} on {left['host']}" in err
    assert "which is no longer running" in err


def test_only_rank_zero_takes_the_lock_under_a_launcher(tmp_path, monkeypatch):
    monkeypatch.delenv(workdir.HELD_ENV, raising=False)
    monkeypatch.setenv("RANK", "1")
    with work_dir_lock(tmp_path, launcher="pytorch"):
        assert not (tmp_path / LOCK_FILE).exists()
    monkeypatch.setenv("RANK", "0")
    with work_dir_lock(tmp_path, launcher="pytorch"):
        assert (tmp_path / LOCK_FILE).exists()


def test_a_sweep_stops_at_a_run_folder_another_process_is_training(tmp_path, fake):
    run_dir = tmp_path / "coop" / "toy-shapes" / "seed1"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run_dir), "hold"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=_env(False))
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(WorkDirLocked, match=f"^{run_dir} is in use: pid {holder.pid} on "):
            _b2n(tmp_path, "--seeds", "1")
        assert fake.calls == []
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0


def test_train_py_refuses_a_work_dir_that_another_process_holds(tmp_path, monkeypatch):
    monkeypatch.delenv(workdir.HELD_ENV, raising=False)
    with work_dir_lock(tmp_path):
        proc = subprocess.run([sys.executable, "tools/train.py", "configs/coop/toy_shapes.py", "--work-dir",
                               str(tmp_path)], cwd=ROOT, capture_output=True, text=True, env=_env(False), timeout=300)
    assert proc.returncode != 0
    assert f"error: {tmp_path} is in use: pid {os.getpid()} on " in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results.json").exists()
