"""Every tool that writes a run folder holds its lock for as long as anything writes there (issue 30, item 4).

* ``tools/meta_train.py`` takes the work dir's lock for its whole run: a second run in the same work dir
  is refused naming the holder, before it reads or writes anything.
* A sweep's ``tools/train.py`` child keeps the lock when the sweep is killed with ``kill -9``: a rerun is
  refused naming the child instead of starting a second trainer in the same run folder, and once the
  orphaned child ends the folder is free again. The children here are stand-ins that take the lock as
  ``tools/train.py`` does and wait for a file, so that no test trains.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import ROOT
from tool_loader import load_tool

from vlprompt import workdir
from vlprompt.workdir import LOCK_FILE, WorkDirLocked, work_dir_lock

_LIGHT = textwrap.dedent("""
    import importlib.util, json, os, subprocess, sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})  # the light vlprompt package, without vlprompt.engine's heavy imports
    spec = importlib.util.spec_from_file_location("vlprompt.workdir", {path!r})
    workdir = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(workdir)
""").format(root=str(ROOT), path=str(ROOT / "vlprompt" / "workdir.py"))

TRAINER = _LIGHT + textwrap.dedent("""
    # a stand-in for tools/train.py: takes the run folder's lock as train.py does, then waits for a file
    run_dir = Path(sys.argv[1])
    try:
        with workdir.work_dir_lock(run_dir):
            (run_dir / "trainer.json").write_text(json.dumps({"pid": os.getpid()}))
            deadline = time.time() + 60
            while not (run_dir / "stop").exists() and time.time() < deadline:
                time.sleep(0.02)
    except workdir.WorkDirLocked as err:
        print(err, flush=True)
        sys.exit(3)
""")

TRY_LOCK = _LIGHT + textwrap.dedent("""
    try:
        with workdir.work_dir_lock(sys.argv[1]):
            print("held", flush=True)
    except workdir.WorkDirLocked as err:
        print(err, flush=True)
        sys.exit(3)
""")

HOLDER = _LIGHT + textwrap.dedent("""
    with workdir.work_dir_lock(sys.argv[1]):
        print("held", flush=True)
        sys.stdin.read()  # until the test closes our stdin
""")

SWEEP_PARENT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from vlprompt.engine.sweep import run_logged
    from vlprompt.workdir import work_dir_lock
    run_dir = Path(sys.argv[1])
    with work_dir_lock(run_dir):  # as run_or_reuse does around a run's tools/train.py
        run_logged(json.loads(sys.argv[2]), run_dir / "sweep.log")
""")

ENV_ONLY_PARENT = _LIGHT + textwrap.dedent("""
    # a parent that starts its child with the lock named in the environment only, not its descriptor
    with workdir.work_dir_lock(sys.argv[1]):
        subprocess.run(json.loads(sys.argv[2]))
""")


@pytest.fixture(autouse=True)
def _no_held_locks(monkeypatch):
    monkeypatch.delenv(workdir.HELD_ENV, raising=False)  # the test process holds no lock


def _children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from ``/proc``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _wait_for_trainer(ready: Path, parent: subprocess.Popen, seconds: float = 120) -> int:
    """The pid of ``parent``'s child, once it has written ``ready`` (it then writes under the lock)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if ready.is_file():
            children = _children_of(parent.pid)
            assert len(children) == 1, children
            return children[0]
        assert parent.poll() is None, f"the parent ended ({parent.returncode}) before its child took the lock"
        time.sleep(0.02)
    raise AssertionError(f"{ready} never appeared")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (our own child, not yet reaped) counts as dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _stop(pid: int) -> None:
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _orphan_a_trainer(tmp_path: Path, parent_script: str, trainer_cmd: list[str] | None = None,
                      ready: str = "trainer.json") -> tuple[Path, int, int]:
    """Start ``parent_script``, which starts ``trainer_cmd`` (default: :data:`TRAINER`) under its lock on the run
    folder; once the trainer has written ``ready`` there, ``kill -9`` the parent. Returns the run folder and the
    parent's and the trainer's pids."""
    run_dir = tmp_path / "coop" / "toy-shapes" / "seed1"
    run_dir.mkdir(parents=True)
    cmd = trainer_cmd or [sys.executable, "-c", TRAINER, str(run_dir)]
    parent = subprocess.Popen([sys.executable, "-c", parent_script, str(run_dir), json.dumps(cmd)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        trainer = _wait_for_trainer(run_dir / ready, parent)
    except BaseException:
        parent.kill()
        raise
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    return run_dir, parent.pid, trainer


# --- a sweep killed with kill -9 while its child trains -----------------------------------------------------


def _assert_rerun_refused_until_the_trainer_ends(run_dir: Path, trainer: int) -> None:
    try:
        assert _alive(trainer), "the trainer died with its parent: nothing writes, the folder may be taken"
        with pytest.raises(WorkDirLocked, match=f"^{run_dir} is in use: pid {trainer} on .*") as err, \
                work_dir_lock(run_dir):
            pass
        assert "\n" not in str(err.value)
        other = subprocess.run([sys.executable, "-c", TRY_LOCK, str(run_dir)], capture_output=True, text=True,
                               timeout=60)
        assert other.returncode == 3 and other.stdout.startswith(f"{run_dir} is in use: pid {trainer} on ")
        (run_dir / "stop").touch()  # the orphaned trainer finishes ...
        deadline = time.time() + 30
        while _alive(trainer) and time.time() < deadline:
            time.sleep(0.02)
        assert not _alive(trainer)
        with work_dir_lock(run_dir):  # ... and the folder is free again
            assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        _stop(trainer)


def _kernel_lock_held(lock: Path) -> bool:
    """Whether some process holds ``lock``'s flock (whatever the file records)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_sweep_killed_with_sigkill_leaves_its_trainer_holding_the_run_folder(tmp_path):
    run_dir, parent, trainer = _orphan_a_trainer(tmp_path, SWEEP_PARENT)
    try:  # run_logged handed the trainer the sweep's locked descriptor: the kernel keeps the flock for it
        assert _kernel_lock_held(run_dir / LOCK_FILE)
    except BaseException:
        _stop(trainer)
        raise
    _assert_rerun_refused_until_the_trainer_ends(run_dir, trainer)


def test_a_rerun_sweep_does_not_start_a_second_trainer_in_an_orphaned_run_folder(tmp_path):
    from vlprompt.engine.sweep import SweepRun, run_or_reuse

    run_dir, parent, trainer = _orphan_a_trainer(tmp_path, SWEEP_PARENT)
    try:
        started = []
        run = SweepRun(run_dir, ROOT / "configs" / "coop" / "toy_shapes.py", ["randomness.seed=1"])
        with pytest.raises(WorkDirLocked, match=f"^{run_dir} is in use: pid {trainer} on .*pid {parent}"):
            run_or_reuse(run, lambda: started.append(1) or {})
        assert started == []
    finally:
        _stop(trainer)


@pytest.mark.slow
def test_a_real_train_py_orphaned_by_a_killed_sweep_keeps_its_run_folder(tmp_path):
    """The same with tools/train.py itself (a long toy run, killed by the test once checked)."""
    from toy_run import CONFIG, FAST

    run_dir = tmp_path / "coop" / "toy-shapes" / "seed1"
    cmd = [sys.executable, "tools/train.py", CONFIG, "--work-dir", str(run_dir), "--resume", "--cfg-options",
           *FAST, "train_cfg.max_epochs=500"]
    run_dir, parent, trainer = _orphan_a_trainer(tmp_path, SWEEP_PARENT, cmd, ready="run.json")
    try:
        assert _alive(trainer) and _kernel_lock_held(run_dir / LOCK_FILE)
        other = subprocess.run([sys.executable, "tools/train.py", CONFIG, "--work-dir", str(run_dir), "--resume",
                                "--cfg-options", *FAST], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert other.returncode != 0 and "Traceback" not in other.stderr
        assert f"error: {run_dir} is in use: pid {trainer} on " in other.stderr
        assert f"(started by pid {parent}, no longer running" in other.stderr
    finally:
        _stop(trainer)
    deadline = time.time() + 30
    while _kernel_lock_held(run_dir / LOCK_FILE) and time.time() < deadline:  # its data workers end too
        time.sleep(0.1)
    with work_dir_lock(run_dir):  # a dead trainer's lock is taken over
        pass


def test_a_child_given_the_lock_by_environment_only_still_keeps_it_when_its_parent_dies(tmp_path):
    run_dir, parent, trainer = _orphan_a_trainer(tmp_path, ENV_ONLY_PARENT)
    _assert_rerun_refused_until_the_trainer_ends(run_dir, trainer)


# --- tools/meta_train.py --------------------------------------------------------------------------------------


def _meta_config(tmp_path: Path) -> Path:
    """A meta-training config as small as tests/meta/test_gram.py's, on a few coloured squares."""
    import numpy as np
    from PIL import Image

    (tmp_path / "img").mkdir()
    rows = ["filepath\ttitle"]
    rgb = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30),
           "purple": (140, 30, 160), "orange": (240, 140, 20)}
    for i in range(96):  # two colour families: the domains
        name = list(rgb)[i % len(rgb)]
        noise = np.random.default_rng(i).integers(-20, 20, (16, 16, 3))
        pixels = np.clip(np.array(rgb[name]) + noise + (0 if i % 2 else 60), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / "img" / f"{i}.png")
        rows.append(f"img/{i}.png\ta {'bright ' if i % 2 == 0 else ''}{name} square_tile")
    (tmp_path / "pairs.tsv").write_text("\n".join(rows) + "\n")
    cfg = {"backbone": {"name": "test-tiny", "pretrained": None},
           "learner": {"type": "coop", "n_ctx": 4, "ctx_init": "a photo of a", "class_token_position": "end"},
           "pairs": {"format": "tsv", "path": str(tmp_path / "pairs.tsv")},
           "clustering": {"domains": 2, "classes_per_domain": 3, "seed": 1},
           "tasks": {"n_way": 2, "k_shot": 2, "q_query": 2},
           "meta": {"iterations": 2, "inner_steps": 1, "checkpoint_interval": 1, "seed": 1},
           "regulator": {"type": "gate"}, "encode_batch_size": 32}
    path = tmp_path / "meta_tiny.py"
    path.write_text("".join(f"{k} = {v!r}\n" for k, v in cfg.items()))
    return path


def test_a_second_meta_train_in_the_same_work_dir_is_refused_before_it_writes(tmp_path):
    meta_train = load_tool("meta_train")
    config, work_dir = _meta_config(tmp_path), tmp_path / "gram"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(work_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(WorkDirLocked, match=f"^{work_dir} is in use: pid {holder.pid} on "):
            meta_train.main([str(config), "--work-dir", str(work_dir)])
    finally:
        holder.communicate("", timeout=30)
    assert [p.name for p in work_dir.iterdir() if p.name != LOCK_FILE] == [], "the refused run wrote into it"


def test_meta_train_holds_its_work_dirs_lock_for_the_whole_run(tmp_path):
    from vlprompt.engine import load_config
    from vlprompt.meta.run import meta_train

    work_dir = tmp_path / "gram"
    tries = []

    def on_step(record: dict) -> None:  # while it meta-trains, another process (not a child of it) tries the lock
        env = {k: v for k, v in os.environ.items() if k != workdir.HELD_ENV}
        tries.append(subprocess.run([sys.executable, "-c", TRY_LOCK, str(work_dir)], capture_output=True,
                                    text=True, env=env, timeout=60))

    path = meta_train(load_config(str(_meta_config(tmp_path))), work_dir, on_step=on_step, log=lambda _: None)
    assert path.is_file() and len(tries) == 2
    for other in tries:
        assert other.returncode == 3, other.stdout + other.stderr
        assert other.stdout.startswith(f"{work_dir} is in use: pid {os.getpid()} on ")
    assert not (work_dir / LOCK_FILE).exists()  # let go at the end
