"""One run per work dir (issue 31): the default folder names the whole run, a folder holding another
run's files is refused, and a rerun resumes or refuses instead of silently starting over."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT
from toy_run import train

from vlprompt.cli import run_tool
from vlprompt.engine.checkpoint import WorkDirConflict


def test_default_work_dirs_name_method_variant_dataset_and_overlays():
    from vlprompt.engine.config import default_work_dir, load_config

    gram = load_config(ROOT / "configs/gram/coop/toy_hues.py")
    coop = load_config(ROOT / "configs/coop/toy_hues.py")
    assert Path(gram.work_dir) == Path("work_dirs/gram/coop/toy_hues")  # GRAM over CoOp is not plain CoOp
    assert Path(coop.work_dir) == Path("work_dirs/coop/toy_hues")
    # the cross-dataset overlay gives the folder its leaf file would have; a user's file keeps its folder name
    assert Path(default_work_dir("configs/maple/imagenet.py", ["cross_dataset"])) == Path("work_dirs/maple/imagenet_xd")
    assert Path(default_work_dir("configs/maple/dtd.py", ["few_shot"])) == Path("work_dirs/maple/dtd_few_shot")
    assert Path(default_work_dir("/tmp/mine/run.py")) == Path("work_dirs/mine/run")


def test_train_help_names_the_default_work_dir():
    out = subprocess.run([sys.executable, "tools/train.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert "work_dirs/<method>/<dataset>" in " ".join(out.split()) and "--overwrite" in out


def test_another_config_in_the_same_work_dir_is_refused_and_overwrite_replaces_it(tmp_path):
    work = tmp_path / "w"
    train(work, epochs=1, test=False)  # coop on toy_shapes
    before = {p.name: p.stat().st_mtime_ns for p in work.iterdir() if p.is_file()}
    hues = str(ROOT / "configs/coop/toy_hues.py")  # the same learner and backbone: checkpoints alone look alike
    from toy_run import FAST, train_tool

    argv = [hues, "--work-dir", str(work), "--no-test", "--cfg-options", *FAST, "train_cfg.max_epochs=1"]
    with pytest.raises(WorkDirConflict, match=rf"{work} holds another run \(coop/toy_shapes: learned.safetensors.*"
                                              r"\); this is coop/toy_hues .*--overwrite"):
        train_tool.main(argv)
    with pytest.raises(WorkDirConflict, match="holds another run"):
        train_tool.main([*argv, "--resume"])
    assert {p.name: p.stat().st_mtime_ns for p in work.iterdir() if p.is_file()} == before  # nothing written

    train_tool.main([*argv, "--overwrite"])
    record = json.loads((work / "run.json").read_text())
    assert record["name"] == "coop/toy_hues" and record["finished"] is True
    assert not (work / "results.json").exists()  # toy_shapes' results went with its run; --no-test writes none


def test_a_rerun_refuses_and_an_interrupted_run_says_how_to_resume(tmp_path, monkeypatch, capsys):
    from toy_run import FAST, train_tool

    from vlprompt.engine.hooks import DurableCheckpointHook

    work = tmp_path / "w"
    argv = [str(ROOT / "configs/coop/toy_shapes.py"), "--work-dir", str(work), "--no-test", "--cfg-options", *FAST,
            "train_cfg.max_epochs=2"]
    save = DurableCheckpointHook._save_checkpoint_with_step

    def save_then_interrupt(self, runner, step, meta):
        save(self, runner, step, meta)
        raise KeyboardInterrupt  # Ctrl-C right after epoch 1 was saved

    monkeypatch.setattr(DurableCheckpointHook, "_save_checkpoint_with_step", save_then_interrupt)
    with pytest.raises(SystemExit) as exit_:
        run_tool(lambda: train_tool.main(argv), argv=[])
    assert exit_.value.code == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"interrupted; {work} holds the unfinished run: add --resume") and "--overwrite" in err
    monkeypatch.setattr(DurableCheckpointHook, "_save_checkpoint_with_step", save)

    with pytest.raises(WorkDirConflict, match=rf"{work} holds an unfinished run of coop/toy_shapes \(its last "
                                              r"checkpoint is epoch_1.pth\); --resume continues it, --overwrite"):
        train_tool.main(argv)
    train_tool.main([*argv, "--resume"])
    assert sorted(p.name for p in work.glob("*.pth")) == ["epoch_2.pth"]
    log = sorted(work.glob("*/*.log"))[-1].read_text()
    assert "resumed epoch: 1" in log  # went on from epoch 1, not from scratch
    with pytest.raises(WorkDirConflict, match=r"holds a finished run of coop/toy_shapes .*--overwrite trains it again"):
        train_tool.main(argv)


def test_a_sweep_refuses_an_unfinished_run_of_other_settings_before_training(tmp_path):
    from vlprompt.engine.checkpoint import write_run_record
    from vlprompt.engine.sweep import SweepRun, effective_config, plan_runs

    run = SweepRun(tmp_path / "seed1", ROOT / "configs/coop/toy_shapes.py", ["randomness.seed=1"])
    settings = effective_config(run.config_file, ["randomness.seed=1", "train_cfg.max_epochs=7"])
    run.run_dir.mkdir()
    (run.run_dir / "epoch_3.pth").write_bytes(b"")
    write_run_record(run.run_dir, {"name": "coop/toy_shapes", "settings": settings, "finished": False})
    with pytest.raises(SystemExit, match=r"seed1 holds an unfinished run with other settings \(train_cfg.max_epochs: "
                                         r"7 -> \d+\).*--overwrite"):
        plan_runs([run])
    write_run_record(run.run_dir, {"name": "coop/toy_shapes", "settings": effective_config(run.config_file,
                                                                                            run.options)})
    assert plan_runs([run]) == [run]  # the same settings: the sweep resumes it


@pytest.mark.slow  # a 1-seed sweep of 2 epochs, interrupted and rerun (about 40 s)
def test_a_sweep_rerun_resumes_its_interrupted_run(tmp_path):
    """fewshot.py after a kill in epoch 2: the rerun resumes from epoch_1.pth instead of starting over."""
    from toy_run import FAST, train_tool

    from vlprompt.engine.sweep import fewshot_run

    options = [o for o in FAST if "num_shots" not in o]
    run = fewshot_run("coop", "toy-shapes", 1, 1, tmp_path / "coop" / "toy-shapes" / "shots1" / "seed1",
                      [*options, "train_cfg.max_epochs=2"], None)
    # the run as the sweep starts it, stopped after epoch 1 (as a kill leaves it: no finished record)
    train_tool.main([str(run.config_file), "--work-dir", str(run.run_dir), "--cfg-options", *run.options,
                     "train_cfg.max_epochs=1"])
    record = json.loads((run.run_dir / "run.json").read_text())
    record["settings"]["train_cfg"]["max_epochs"] = 2
    record["finished"] = False
    (run.run_dir / "run.json").write_text(json.dumps(record))
    (run.run_dir / "learned.safetensors").unlink()
    (run.run_dir / "results.json").unlink()
    proc = subprocess.run([sys.executable, "tools/fewshot.py", "--method", "coop", "--datasets", "toy-shapes",
                           "--shots", "1", "--seeds", "1", "--epochs", "2", "--work-root", str(tmp_path),
                           "--cfg-options", *options], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the quiet sweep log names the run's own log, where mmengine reports what it resumed
    run_log = re.search(r"^log: +(\S+)$", (run.run_dir / "sweep.log").read_text(), re.M)
    assert run_log, (run.run_dir / "sweep.log").read_text()[-2000:]
    assert "resumed epoch: 1" in Path(run_log.group(1)).read_text()
    assert (run.run_dir / "sweep_result.json").is_file()
