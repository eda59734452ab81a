"""What a newcomer meets: random weights are never used silently, one environment dump per run,
test lines that say which classes they measured (issue 18)."""

import sys
import uuid
import warnings

import pytest
from helpers import ROOT
from tool_loader import load_tool

import vlprompt
from vlprompt.zeroshot import RandomWeightsWarning


def test_random_weights_warn_unless_asked_for():
    with pytest.warns(RandomWeightsWarning, match=r"test-tiny has no packaged weights, so this classifier has "
                                                  r"random weights .* pass pretrained='openai'"):
        vlprompt.load_prompted_clip("test-tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomWeightsWarning)
        vlprompt.load_prompted_clip("test-tiny", pretrained=None)  # asked for: no warning
        vlprompt.load_prompted_clip("toy")  # packaged weights


def test_one_train_run_logs_the_environment_once_and_labels_base_and_novel(tmp_path):
    train_tool = load_tool("train")

    work = tmp_path / "run"
    train_tool.main([str(ROOT / "configs/coop/toy_shapes.py"), "--work-dir", str(work), "--cfg-options",
                     "model.backbone.name=test-tiny", "model.backbone.pretrained=None",
                     "train_dataloader.dataset.num_shots=1", "train_cfg.max_epochs=1",
                     f"experiment_name=run_{uuid.uuid4().hex[:8]}"])
    logs = "".join(p.read_text() for p in work.rglob("*.log"))
    assert logs.count("System environment:") == 1 and logs.count("Config:\n") == 1
    assert "GPU number" not in logs and "devices: CPU only" in logs
    assert "test on the base classes of toy-shapes (20 classes): top-1" in logs
    assert "test on the novel classes of toy-shapes (20 classes): top-1" in logs


def test_tensorboard_switch_says_how_to_install_it(monkeypatch):
    from vlprompt.engine.runner import with_tensorboard
    from vlprompt.errors import ConfigError

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    with pytest.raises(ConfigError, match=r'tensorboard=True: the tensorboard package is not installed; '
                                          r'pip install -e "\.\[tensorboard\]"'):
        with_tensorboard(None)


def test_tensorboard_switch_writes_events(tmp_path):
    pytest.importorskip("tensorboard")
    train_tool = load_tool("train")

    work = tmp_path / "run"
    train_tool.main([str(ROOT / "configs/coop/toy_shapes.py"), "--work-dir", str(work), "--no-test", "--cfg-options",
                     "model.backbone.name=test-tiny", "model.backbone.pretrained=None", "tensorboard=True",
                     "train_dataloader.dataset.num_shots=1", "train_cfg.max_epochs=1",
                     "default_hooks.logger.interval=1", f"experiment_name=run_{uuid.uuid4().hex[:8]}"])
    assert list(work.rglob("vis_data/events.out.tfevents.*")) and list(work.rglob("vis_data/scalars.json"))


def test_the_no_data_root_hint_names_flags_the_tools_really_have(monkeypatch):
    import re
    import subprocess

    from vlprompt.datasets import DATA_ENV, DatasetError, resolve_data_root

    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(DatasetError) as err:
        resolve_data_root(None)
    hints = re.findall(r"(--[\w-]+)[ =]\S+ \(([^)]*)\)", str(err.value))
    assert [flag for flag, _ in hints] == ["--cfg-options", "--data-root"]
    sweeps = ["tools/base2novel.py", "tools/fewshot.py", "tools/transfer.py"]
    for flag, where in hints:
        tools = [t for part in where.split(", ") for t in (sweeps if part == "the sweep tools" else [part])]
        assert tools
        for tool in tools:
            argv = [sys.executable, tool, *(["verify"] if tool.endswith("prepare_data.py") else []), "--help"]
            out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
            assert flag in out, f"{tool} has no {flag}, but the no-data-root message says it does"
