"""What a run shows on the terminal (issue 31, items 4 and 5): the header, progress and the result line,
while mmengine's environment, config, hook table and deprecation notices go to the log file only; a sweep
prints each run's log path and drives a bar from the progress file the run writes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
import warnings
from pathlib import Path

import pytest
from helpers import ROOT

# vlprompt.progress's PROGRESS_ENV, PROGRESS_FILE_ENV and VERBOSE_ENV, spelled out: they are what users set
PROGRESS_ENV, PROGRESS_FILE_ENV, VERBOSE_ENV = "VLPROMPT_PROGRESS", "VLPROMPT_PROGRESS_FILE", "VLPROMPT_VERBOSE"

TOY = str(ROOT / "configs/coop/toy_shapes.py")
QUICK = ["model.backbone.name=test-tiny", "model.backbone.pretrained=None", "train_dataloader.dataset.num_shots=1",
         "train_cfg.max_epochs=1"]
NOISE = ("System environment:", "Config:", "Hooks will be executed in the following order", "FileClient",
         "HardDiskBackend", "Epoch(train)", "Epoch(test)")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (PROGRESS_ENV, PROGRESS_FILE_ENV, VERBOSE_ENV)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return {**env, **extra}


def test_train_terminal_shows_header_and_result_while_the_log_file_keeps_everything(tmp_path):
    work, progress = tmp_path / "run", tmp_path / "progress.json"
    proc = subprocess.run([sys.executable, "tools/train.py", TOY, "--work-dir", str(work), "--cfg-options", *QUICK],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=_env(**{PROGRESS_FILE_ENV: str(progress)}))
    assert proc.returncode == 0, proc.stderr
    terminal = proc.stdout + proc.stderr
    for noise in NOISE:
        assert noise not in terminal, f"{noise!r} on the terminal:\n{terminal}"
    lines = [line for line in terminal.splitlines() if line.strip()]
    assert lines[0] == f"config:   {TOY}" and lines[1] == f"work dir: {work}", terminal
    assert lines[2].startswith("log:      ") and lines[-1].startswith("toy_shapes: base "), terminal
    assert len(lines) == 4, terminal  # header, result: no bar either, as stderr is not a terminal here
    log = Path(lines[2].split(None, 1)[1])
    assert log.is_file() and log.parent.parent == work
    text = log.read_text()
    for kept in ("System environment:", "Config:", "Hooks will be executed in the following order", "FileClient",
                 "Epoch(train)"):
        assert kept in text, f"{kept!r} missing from {log}"
    state = json.loads(progress.read_text())  # the last state the run reported to a sweep: its last test, done
    assert state["stage"] == "test novel" and state["done"] == state["total"] > 0 and Path(state["log"]).is_file()


def test_quiet_console_filters_the_terminal_only_and_verbose_restores_it(tmp_path, capsys):
    from mmengine.logging import MMLogger

    from vlprompt.engine.console import quiet_console, route_warnings
    from vlprompt.progress import set_verbose

    log = tmp_path / "run.log"
    logger = quiet_console(MMLogger.get_instance(f"quiet_{uuid.uuid4().hex[:8]}", log_file=str(log)))
    logger.info("Config:\nlr = 0.002")
    logger.warning('"FileClient" will be deprecated in future. Please use io functions')
    logger.warning("--resume: epoch_3.pth is damaged; resuming from epoch_2.pth")
    with pytest.warns(UserWarning, match="vlprompt's own") as seen:
        route_warnings()
        warnings.warn("an old torch API", FutureWarning, stacklevel=1)
        warnings.warn("vlprompt's own warning", UserWarning, stacklevel=1)
    assert [w.category for w in seen] == [UserWarning]  # the FutureWarning went to the log file only
    out = capsys.readouterr().out
    assert "Config:" not in out and "FileClient" not in out and "resuming from epoch_2.pth" in out
    text = log.read_text()
    for kept in ("Config:", "FileClient", "resuming from epoch_2.pth", "an old torch API", "vlprompt's own warning"):
        assert kept in text

    set_verbose(True)
    try:
        loud = quiet_console(MMLogger.get_instance(f"loud_{uuid.uuid4().hex[:8]}", log_file=str(tmp_path / "v.log")))
        loud.info("Config:\nlr = 0.002")
    finally:
        set_verbose(False)
    assert "Config:" in capsys.readouterr().out


FAKE_RUN = """
import sys, time
from vlprompt.progress import ProgressWriter

writer, log = ProgressWriter(), sys.argv[1]
print("the run's own output")
for done in range(5):
    epoch = 1 + done // 2
    writer.write({"stage": "train", "done": done, "total": 4, "epoch": min(epoch, 2), "epochs": 2, "log": log},
                 force=True)
    time.sleep(0.3)
"""


def test_run_logged_prints_the_log_path_and_follows_the_run_to_its_total(tmp_path, monkeypatch, capsys):
    from vlprompt.engine.sweep import run_logged

    for key, value in _env(**{PROGRESS_ENV: "1"}).items():  # a bar even though stderr is captured
        monkeypatch.setenv(key, value)
    run_log, sweep_log = tmp_path / "20261204_120000.log", tmp_path / "sweep.log"
    run_logged([sys.executable, "-c", textwrap.dedent(FAKE_RUN), str(run_log)], sweep_log)
    out, err = capsys.readouterr()
    assert f"log: {run_log}" in out.splitlines()
    assert "train epoch 2/2" in err and "4/4" in err, err
    assert "the run's own output" in sweep_log.read_text() and "the run's own output" not in out + err


def test_run_logged_names_the_log_of_a_failed_run(tmp_path):
    from vlprompt.engine.sweep import run_logged

    with pytest.raises(RuntimeError, match=r"command failed \(3\): .*; see .*sweep\.log"):
        run_logged([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "sweep.log")


@pytest.mark.slow
def test_a_sweep_run_shows_its_log_and_a_bar_over_its_training(tmp_path, monkeypatch, capsys):
    from vlprompt.engine.sweep import run_logged

    for key, value in _env(**{PROGRESS_ENV: "1"}).items():
        monkeypatch.setenv(key, value)
    work = tmp_path / "run"
    # one image per step, so that training lasts several of the sweep's polls (0.5 s) even on a fast machine
    slow = ["train_dataloader.dataset.num_shots=16", "train_dataloader.batch_size=1", "train_cfg.max_epochs=3"]
    run_logged([sys.executable, "tools/train.py", TOY, "--work-dir", str(work), "--cfg-options", *QUICK, *slow,
                f"experiment_name=run_{uuid.uuid4().hex[:8]}"], work / "sweep.log")
    out, err = capsys.readouterr()
    (log,) = [line.split(None, 1)[1] for line in out.splitlines() if line.startswith("log: ")]
    assert Path(log).is_file() and Path(log).parent.parent == work
    assert re.search(r"train epoch [123]/3", err) and "test novel" in err, err
