"""The command-line tools: expected errors print one ``error:`` line, bugs keep their traceback, and
``--help`` or an argument error answers without importing torch, open_clip or mmengine (issue 17)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from vlprompt import cli
from vlprompt.errors import ConfigError, UserError

TOOLS = sorted(p.name for p in (ROOT / "tools").glob("*.py"))
HEAVY = ("torch", "open_clip", "mmengine", "vlprompt.engine")


def _env(**changes: str | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(cli.DEBUG_ENV, None)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _run(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env=env or _env(), timeout=timeout)


def _imported(importtime_stderr: str) -> set[str]:
    """Module names from ``python -X importtime``'s report."""
    return {line.rsplit("|", 1)[-1].strip() for line in importtime_stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


# ------------------------------------------------------------------------------------------ fast start


@pytest.mark.parametrize("tool", TOOLS)
def test_help_imports_no_torch_open_clip_or_mmengine(tool):
    proc = _run("-X", "importtime", f"tools/{tool}", "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout and "--debug" in proc.stdout
    modules = _imported(proc.stderr)
    assert "vlprompt.cli" in modules
    assert _heavy(modules) == []


@pytest.mark.parametrize("argv", [["tools/train.py"], ["tools/test.py", "configs/coop/toy_shapes.py"],
                                  ["tools/train.py", "configs/coop/toy_shapes.py", "--cfg-options", "seed"],
                                  ["tools/base2novel.py", "--datasets", "dtd"], ["tools/zero_shot.py", "--shots", "x"]])
def test_an_argument_error_imports_nothing_heavy(argv):
    proc = _run("-X", "importtime", *argv, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert lines[-1].startswith(f"{Path(argv[0]).name}: error: ")
    assert _heavy(_imported(proc.stderr)) == []


def test_help_of_train_and_test_says_which_keys_cfg_options_may_add():
    from vlprompt.engine.config import ADDABLE_KEYS

    assert cli.ADDABLE_KEYS == ADDABLE_KEYS
    for tool in ("tools/train.py", "tools/test.py"):
        text = " ".join(_run(tool, "--help", timeout=120).stdout.split())
        assert f"top level ({', '.join(ADDABLE_KEYS)})" in text
        assert "inside a dict whose 'type' takes it as an argument" in text


def test_data_env_is_the_datasets_one():
    from vlprompt.datasets import DATA_ENV

    assert cli.DATA_ENV == DATA_ENV


# ------------------------------------------------------------------------------------- one-line errors


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == cli.EXIT_USER_ERROR, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


def test_a_missing_config(tmp_path):
    line = _one_error_line(_run("tools/train.py", "configs/coop/toy_shape.py", "--work-dir", str(tmp_path / "w")))
    assert line.startswith("error: config not found: configs/coop/toy_shape.py (did you mean "
                           "configs/coop/toy_shapes.py?): no such file, and no run to compose: unknown dataset "
                           "'toy_shape' (did you mean toy-shapes")
    assert not (tmp_path / "w").exists()


def test_a_missing_checkpoint():
    line = _one_error_line(_run("tools/test.py", "configs/coop/toy_shapes.py", "nope.safetensors"))
    assert line.startswith("error: checkpoint not found: nope.safetensors does not exist")
    assert "'none' for zero-shot CLIP" in line


def test_a_truncated_safetensors_checkpoint(tmp_path):
    import torch

    from vlprompt.backbones import save_safetensors

    good = tmp_path / "good.safetensors"
    save_safetensors({"ctx": torch.zeros(4, 8)}, good, {"format": "vlprompt"})
    bad = tmp_path / "learned.safetensors"
    bad.write_bytes(good.read_bytes()[:20])
    line = _one_error_line(_run("tools/test.py", "configs/coop/toy_shapes.py", str(bad),
                                "--work-dir", str(tmp_path / "run")))  # the runner is built before the file is read
    assert line.startswith(f"error: {bad}: not a readable safetensors file")


def test_an_unknown_dataset_name_in_a_sweep(tmp_path):
    line = _one_error_line(_run("tools/base2novel.py", "--method", "coop", "--datasets", "nope",
                                "--work-root", str(tmp_path)))
    assert "--datasets nope: unknown dataset 'nope'" in line and "known: " in line and "toy-shapes" in line
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_dataset_name_in_zero_shot():
    line = _one_error_line(_run("tools/zero_shot.py", "--datasets", "toy-shapes", "nope"))
    assert line.startswith("error: --datasets nope: unknown dataset 'nope'; known: ") and "toy-shapes" in line


def test_an_unknown_protocol(tmp_path):
    line = _one_error_line(_run("tools/transfer.py", "--method", "coop", "--protocol", "nope",
                                "--work-root", str(tmp_path)))
    assert line.startswith("error: --protocol nope: unknown protocol 'nope'; known: ")


def test_no_data_root(tmp_path):
    proc = _run("tools/train.py", "configs/coop/dtd.py", "--work-dir", str(tmp_path / "w"),
                env=_env(VLPROMPT_DATA=None, HOME=str(tmp_path)))
    line = _one_error_line(proc)
    assert "no data root" in line and "VLPROMPT_DATA" in line and "data_root=" in line


def test_a_value_of_the_wrong_kind():
    line = _one_error_line(_run("tools/train.py", "configs/coop/toy_shapes.py", "--cfg-options",
                                "train_dataloader.batch_size=abc"))
    assert line.startswith("error: --cfg-options train_dataloader.batch_size='abc': ")


def test_an_unknown_key_never_starts_the_run(tmp_path):
    work = tmp_path / "w"
    line = _one_error_line(_run("tools/train.py", "configs/coop/toy_shapes.py", "--work-dir", str(work),
                                "--cfg-options", "randomnes.seed=2"))
    assert line.startswith("error: --cfg-options randomnes.seed: ") and "(closest: randomness)" in line
    assert not work.exists()


def test_a_work_dir_of_another_config_is_refused_before_anything_loads(tmp_path):
    from toy_run import FAST, train

    work = tmp_path / "w"
    train(work, epochs=1, test=False)
    before = sorted(p.name for p in work.iterdir())
    line = _one_error_line(_run("tools/train.py", "configs/coop/toy_shapes.py", "--work-dir", str(work), "--resume",
                                "--no-test", "--cfg-options", *FAST, "model.learner.n_ctx=2"))
    assert line.startswith(f"error: {work} holds checkpoints of another run: {work / 'epoch_1.pth'} is learner 'coop'")
    assert "(config " in line and "toy_shapes.py), but configs/coop/toy_shapes.py asks for learner 'coop'" in line
    assert "n_ctx=2" in line and "use another --work-dir" in line
    assert sorted(p.name for p in work.iterdir()) == before  # nothing written, nothing loaded


# ------------------------------------------------------------------------------- tracebacks when wanted


def test_debug_shows_the_traceback():
    proc = _run("tools/train.py", "configs/coop/toy_shape.py", "--debug")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigNotFoundError: config not found: configs/coop/toy_shape.py" \
        in proc.stderr


def test_a_genuine_bug_keeps_its_traceback(tmp_path):
    code = ("import runpy, sys, vlprompt.toyworld as t\n"
            "def broken(root=None):\n    raise ZeroDivisionError('a bug')\n"
            "t.toy_root = broken\n"
            "sys.argv = ['tools/make_toy_world.py', '--root', sys.argv[1]]\n"
            "runpy.run_path('tools/make_toy_world.py', run_name='__main__')\n")
    proc = _run("-c", code, str(tmp_path), timeout=120)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and proc.stderr.rstrip().endswith("ZeroDivisionError: a bug")


# ----------------------------------------------------------------------------------- run_tool in process


def _raise(err: BaseException):
    def main():
        raise err
    return main


def test_run_tool_returns_what_main_returns():
    assert cli.run_tool(lambda: {"top1": 1.0}, argv=[]) == {"top1": 1.0}


def test_run_tool_prints_a_user_error_on_one_line(capsys, monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)

    class Missing(UserError, KeyError):
        pass

    with pytest.raises(SystemExit) as exit_:
        cli.run_tool(_raise(Missing("unknown learner 'CoOpp'\n  -> did you mean CoOp?")), argv=[])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: unknown learner 'CoOpp' -> did you mean CoOp?\n"


def test_run_tool_puts_a_sweeps_refusal_on_one_line(capsys, monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_:
        cli.run_tool(_raise(SystemExit("run a differs\nrun b differs; use --overwrite\n(nothing was trained)")),
                     argv=[])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: run a differs; run b differs; use --overwrite (nothing was trained)\n"


def test_run_tool_leaves_status_exits_alone(capsys):
    for code in (0, 1, 2, None):
        with pytest.raises(SystemExit) as exit_:
            cli.run_tool(_raise(SystemExit(code)), argv=[])
        assert exit_.value.code == code
    assert capsys.readouterr().err == ""


def test_run_tool_lets_a_bug_through(monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.run_tool(_raise(RuntimeError("a bug")), argv=[])


@pytest.mark.parametrize("how", ["flag", "env"])
def test_run_tool_reraises_a_user_error_when_debugging(how, monkeypatch):
    monkeypatch.setenv(cli.DEBUG_ENV, "1" if how == "env" else "0")  # restored after the test: run_tool sets it
    with pytest.raises(ConfigError, match="bad key"):
        cli.run_tool(_raise(ConfigError("bad key")), argv=["--debug"] if how == "flag" else [])
    assert os.environ[cli.DEBUG_ENV] == "1"  # passed on to the runs a sweep starts


@pytest.mark.parametrize("value", ["", "0", "false", "no"])
def test_debug_env_off_values(value, monkeypatch):
    monkeypatch.setenv(cli.DEBUG_ENV, value)
    assert not cli.debug_requested([])


def test_run_tool_on_ctrl_c(capsys, monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_:
        cli.run_tool(_raise(KeyboardInterrupt()), argv=[])
    assert exit_.value.code == 130
    assert capsys.readouterr().err == "interrupted\n"


# ------------------------------------------------------------------------------------------ --cfg-options

EXAMPLES = [
    ["a=1"], ["a=-3"], ["a=1.5"], ["a=1e-3"], ["a=inf"], ["a=True"], ["a=false"], ["a=None"], ["a=none"],
    ["a=[1,2]"], ["a=(1,2)"], ["a=1,2,3"], ["a=[(1,2),[x,y],z]"], ["a=[]"], ["a='q'"], ['a="1"'], ["a="],
    ["a=b=c"], ["a=x y"], ["a.b.c=x"], ["x.0.y=3"], ["a=1", "a=2"], ["data_root=/data/x,y"], ["a=[1, 2]"],
    ["model.backbone.pretrained=None", "train_dataloader.batch_size=8", "optim_wrapper.optimizer.lr=0.002"],
]


def _dict_action(values: list[str]) -> dict:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser()
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    return parser.parse_args(["--cfg-options", *values]).cfg_options


@pytest.mark.parametrize("values", EXAMPLES, ids=" ".join)
def test_cfg_options_parse_as_dict_action_does(values):
    parser = argparse.ArgumentParser()
    cli.add_cfg_options(parser)
    raw = parser.parse_args(["--cfg-options", *values]).cfg_options
    assert raw == values
    parsed = cli.cfg_options(raw)
    expected = _dict_action(values)
    assert parsed == expected and [type(v) for v in parsed.values()] == [type(v) for v in expected.values()]


def test_repeated_cfg_options_add_up_as_with_dict_action():
    parser = argparse.ArgumentParser()
    cli.add_cfg_options(parser)
    argv = ["--cfg-options", "a=1", "b=2", "--cfg-options", "a=3"]
    from mmengine.config import DictAction

    reference = argparse.ArgumentParser()
    reference.add_argument("--cfg-options", nargs="+", action=DictAction)
    assert cli.cfg_options(parser.parse_args(argv).cfg_options) == reference.parse_args(argv).cfg_options
    assert cli.cfg_options(parser.parse_args([]).cfg_options) is None


def test_a_cfg_option_without_a_value_is_a_usage_error(capsys):
    parser = argparse.ArgumentParser(prog="train.py")
    cli.add_cfg_options(parser)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--cfg-options", "seed"])
    assert exit_.value.code == 2
    assert "argument --cfg-options: 'seed' is not key=value" in capsys.readouterr().err
