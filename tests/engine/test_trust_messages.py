"""Trust, second pass (issue 30), item 9: values a tool refuses end in one line naming the value, exit 2, not a
traceback. ``tools/tta.py --datasets no-such-set``; ``--device cuda:7`` on a machine without that device (every
tool taking ``--device``); ``--cfg-options`` values that no run can use (``num_shots=-3``, ``subsample=basee``,
``model.backbone.name=nope``); and a damaged ``active_state.json`` (empty, truncated, picks that are not pool
indices or repeat one), named by its path, never by an internal class such as ``LabelledSubset``."""

from __future__ import annotations

import json
import re

import pytest
import torch
from helpers import ROOT
from tool_loader import load_tool

from vlprompt.cli import UsageError, run_tool
from vlprompt.errors import ConfigError, UserError

tta = load_tool("tta")
TPT_CONFIG = "configs/tpt/toy_shapes_noise.py"
RLCF_CONFIG = "configs/rlcf/toy_shapes_noise.py"
ACTIVE_CONFIG = str(ROOT / "configs/active/toy_hues.py")


def one_line_exit(main, argv: list[str], capsys) -> str:
    """``main(argv)`` as the tool runs it: exit status 2 and one ``error:`` line on stderr, which is returned."""
    with pytest.raises(SystemExit) as stop:
        run_tool(lambda: main(argv), argv)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# ------------------------------------------------------------------------------------------ datasets
def test_an_unknown_tta_dataset_is_one_line(tmp_path, capsys):
    line = one_line_exit(tta.main, [TPT_CONFIG, "--datasets", "no-such-set", "--work-dir", str(tmp_path)], capsys)
    assert "--datasets no-such-set: unknown dataset 'no-such-set'" in line


# ------------------------------------------------------------------------------------------ devices
@pytest.fixture
def two_gpus(monkeypatch):
    """A machine with cuda:0 and cuda:1 (whatever this one has)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_a_device_this_machine_lacks_is_named(two_gpus):
    from vlprompt.cli import device_argument

    assert device_argument(None) is None and device_argument("cpu") == "cpu" and device_argument("cuda:1") == "cuda:1"
    with pytest.raises(UsageError, match=r"--device cuda:7: this machine has 2 CUDA devices \(cuda:0 to cuda:1\)"):
        device_argument("cuda:7")
    with pytest.raises(UsageError, match=r"--device gpu: not a device \(cpu, cuda, cuda:N"):
        device_argument("gpu")


def test_cuda_on_a_machine_without_a_gpu_is_named(no_gpu):
    from vlprompt.cli import device_argument

    with pytest.raises(UsageError, match=r"--device cuda: this machine has no CUDA device"):
        device_argument("cuda")


@pytest.mark.parametrize("tool, argv", [
    ("tta", [TPT_CONFIG, "--limit", "1"]),
    ("zero_shot", ["--backbone", "test-tiny", "--datasets", "toy-hues"]),
])
def test_every_tool_taking_device_refuses_a_missing_one_in_one_line(tmp_path, capsys, two_gpus, tool, argv):
    line = one_line_exit(load_tool(tool).main, [*argv, "--device", "cuda:7"], capsys)
    assert line.startswith("error: --device cuda:7: this machine has 2 CUDA devices")


def test_the_tta_loop_refuses_a_missing_device_before_any_work(two_gpus):
    from vlprompt.adapters.run import pick_device

    with pytest.raises(UsageError, match="cuda:7"):
        pick_device("cuda:7", "none")


# ------------------------------------------------------------------------------------------ --cfg-options values
@pytest.mark.parametrize("option, message", [
    ("test_dataloader.dataset.num_shots=-3", r"test_dataloader.dataset.num_shots=-3: num_shots must be a whole number "
                                             r">= 1 \(K images per class\) or None"),
    ("test_dataloader.dataset.num_shots=2.5", r"num_shots=2.5: num_shots must be a whole number"),
    ("test_dataloader.dataset.subsample=basee", r"test_dataloader.dataset.subsample='basee': subsample must be one "
                                                r"of 'all', 'base', 'novel'"),
    ("model.backbone.name=nope", r"model.backbone.name='nope': unknown CLIP architecture 'nope'; "
                                 r"available: .*test-tiny"),
])
def test_option_values_no_run_can_use_are_one_line(tmp_path, capsys, option, message):
    line = one_line_exit(tta.main, [TPT_CONFIG, "--work-dir", str(tmp_path), "--cfg-options", option], capsys)
    assert line.startswith("error: --cfg-options ")
    assert re.search(message, line), line


def test_a_teacher_name_no_run_can_use_is_one_line(tmp_path, capsys):
    line = one_line_exit(tta.main, [RLCF_CONFIG, "--work-dir", str(tmp_path), "--cfg-options",
                                    "adapter.teacher.name=nope"], capsys)
    assert "adapter.teacher.name='nope': unknown CLIP architecture 'nope'" in line


@pytest.mark.parametrize("option, message", [
    ("train_dataloader.dataset.num_shots=-3", "num_shots must be a whole number >= 1"),
    ("train_dataloader.dataset.num_shots=0", "num_shots must be a whole number >= 1"),
    ("train_dataloader.dataset.subsample=basee", "subsample must be one of"),
    ("test_dataloader.dataset.subsample=NOVEL", None),  # accepted as the reader accepts it
    ("train_dataloader.dataset.num_shots=None", None),
    ("model.backbone.name=test-tiny", None),
])
def test_training_options_are_checked_when_the_config_loads(option, message):
    from vlprompt.cli import cfg_options
    from vlprompt.engine import load_config

    if message is None:
        load_config(str(ROOT / "configs/coop/toy_shapes.py"), None, cfg_options([option]))
        return
    with pytest.raises(ConfigError, match=rf"--cfg-options {option.split('=')[0]}=.*{message}"):
        load_config(str(ROOT / "configs/coop/toy_shapes.py"), None, cfg_options([option]))


def test_the_train_tool_gives_the_option_value_in_one_line(tmp_path, capsys):
    line = one_line_exit(load_tool("train").main, [str(ROOT / "configs/coop/toy_shapes.py"), "--work-dir",
                                                   str(tmp_path), "--cfg-options",
                                                   "train_dataloader.dataset.num_shots=-3"], capsys)
    assert "train_dataloader.dataset.num_shots=-3: num_shots must be a whole number >= 1" in line


# ------------------------------------------------------------------------------------------ active_state.json
def _round(r: int, picks: list) -> dict:
    return {"round": r, "selected": picks, "labelled": 2 * (r + 1), "candidates": None, "top1": 50.0,
            "class_counts": [1, 1], "balance": 1.0, "classes_seen": 2, "select_s": 0.1, "round_s": 1.0}


def _state(rounds: list[dict]) -> dict:
    return {"settings": {"sampler": "random"}, "seed": 1, "pool_size": 1600, "classes": ["a", "b"],
            "config": ACTIVE_CONFIG, "rounds": rounds}


DAMAGED = {
    "empty": ("", r"is empty"),
    "truncated": ('{"settings": {"sampler": "random"}, "seed": 1, "rounds": [', r"is not JSON \(truncated"),
    "list": ("[1, 2]", r"is not an active-learning state \(a list"),
    "rounds": (_state("all"), r"'rounds' = 'all' is not a list of rounds"),
    "evil": (_state([_round(0, [3, "evil"])]), r"rounds\[0\].selected\[1\] = 'evil' is not a pool index"),
    "float": (_state([_round(0, [3.7])]), r"rounds\[0\].selected\[0\] = 3.7 is not a pool index"),
    "bool": (_state([_round(0, [True])]), r"rounds\[0\].selected\[0\] = True is not a pool index"),
    "huge": (_state([_round(0, [10**6])]), r"rounds\[0\].selected\[0\] = 1000000 is not a pool index \(a whole "
                                           r"number from 0 to 1599\)"),
    "negative": (_state([_round(0, [-1])]), r"rounds\[0\].selected\[0\] = -1 is not a pool index"),
    "repeated": (_state([_round(0, [4, 4])]), r"rounds\[0\].selected\[1\] = 4 is labelled twice \(also "
                                              r"rounds\[0\].selected\[0\]\)"),
    "repeated-rounds": (_state([_round(0, [4, 5]), _round(1, [6, 5])]), r"rounds\[1\].selected\[1\] = 5 is labelled "
                                                                        r"twice \(also rounds\[0\].selected\[1\]\)"),
    "top1": (_state([{**_round(0, [4]), "top1": "abc"}]), r"rounds\[0\].top1 = 'abc' is not a number"),
    "pool": ({**_state([]), "pool_size": "many"}, r"'pool_size' = 'many' is not a whole number >= 1"),
}


def _write_state(run_dir, content) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    text = content if isinstance(content, str) else json.dumps(content)
    (run_dir / "active_state.json").write_text(text)


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_active_state_is_refused_naming_the_file_and_value(tmp_path, case):
    from vlprompt.active import read_state

    content, message = DAMAGED[case]
    _write_state(tmp_path, content)
    with pytest.raises(UserError, match=rf"{tmp_path / 'active_state.json'}: .*{message}") as err:
        read_state(tmp_path)
    assert "LabelledSubset" not in str(err.value) and "\n" not in str(err.value)


def test_a_run_without_a_state_has_none(tmp_path):
    from vlprompt.active import read_state

    assert read_state(tmp_path / "no-such-run") is None


def test_a_good_active_state_round_trips(tmp_path):
    from vlprompt.active import labelled_indices, read_state

    state = _state([_round(0, [4, 5]), _round(1, [0, 1599])])
    _write_state(tmp_path, state)
    assert read_state(tmp_path) == state and labelled_indices(state) == [4, 5, 0, 1599]


@pytest.mark.parametrize("case", ["empty", "truncated", "evil", "float", "huge", "negative", "repeated"])
@pytest.mark.parametrize("report_only", [False, True], ids=["run", "report"])
def test_the_active_tool_names_a_damaged_state_in_one_line(tmp_path, capsys, case, report_only):
    content, message = DAMAGED[case]
    state_dir = tmp_path / "random" / "seed1"
    _write_state(state_dir, content)
    argv = [ACTIVE_CONFIG, "--samplers", "random", "--pcb", "off", "--seeds", "1", "--work-root", str(tmp_path)]
    line = one_line_exit(load_tool("active").main, argv + (["--report-only"] if report_only else []), capsys)
    assert line.startswith(f"error: {state_dir / 'active_state.json'}: ") and re.search(message, line), line
    assert "LabelledSubset" not in line
