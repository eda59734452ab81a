"""The README's "Try it" commands work in the order shown (issue 18).

The commands are read from the fenced bash block under ``## Try it`` in README.md, so the README
cannot drift from the tools: a tool, config, flag or value that disappears fails the fast tests, and
so does a command that needs an output no earlier command makes (compare_methods once needed a
zero-shot sweep nothing made). The slow test runs every command in order, shortened. The quick-look
block below it is checked the same way, and each block's table of times must give every command a
time and a total that adds up (issue 31).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT
from tool_loader import load_tool

SHORT_TRAINING = ["train_cfg.max_epochs=1", "train_dataloader.dataset.num_shots=1"]
SHORTEN = {  # flags appended to each README command (a later flag of the same name wins)
    "zero_shot.py": ["--datasets", "toy-shapes", "--shots", "1"],
    "train.py": ["--cfg-options", *SHORT_TRAINING],
    "base2novel.py": ["--seeds", "1", "--cfg-options", *SHORT_TRAINING],
    "compare_methods.py": [],
    "fewshot.py": ["--shots", "1", "--seeds", "1", "--epochs", "1"],
    "transfer.py": ["--seeds", "1", "--cfg-options", *SHORT_TRAINING],
}


def _try_it_section() -> str:
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Try it\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Try it' section"
    return section.group(1)


def try_it_blocks() -> list[tuple[list[list[str]], str]]:
    """Each ```bash block under ``## Try it``: the argv of its lines (comments dropped) and the text
    between it and the next block (where its table of times is)."""
    section = _try_it_section()
    blocks = list(re.finditer(r"```bash\n(.*?)```", section, re.S))
    assert blocks, "README.md's 'Try it' section has no ```bash block"
    out = []
    for i, block in enumerate(blocks):
        after = section[block.end():blocks[i + 1].start() if i + 1 < len(blocks) else len(section)]
        argvs = [shlex.split(line, comments=True) for line in block.group(1).splitlines() if line.strip()]
        out.append((argvs, after))
    return out


def try_it_commands() -> list[list[str]]:
    """The full path: the first bash block under ``## Try it``."""
    return try_it_blocks()[0][0]


def quick_look_commands() -> list[list[str]]:
    """The quick look (one seed, few epochs): the second bash block under ``## Try it``."""
    blocks = try_it_blocks()
    assert len(blocks) >= 2, "README.md's 'Try it' section has no quick-look block after the full one"
    return blocks[1][0]


def _seconds(text: str) -> int:
    """'4 min 1 s' -> 241; '34 s' -> 34."""
    match = re.fullmatch(r"\**(?:(\d+) min)? ?(?:(\d+) s)?\**", text.strip())
    assert match and any(match.groups()), f"README 'Try it': {text!r} is not a time like '4 min 1 s'"
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def _tool(argv: list[str]) -> str:
    assert argv[0] == "python" and argv[1].startswith("tools/"), f"not a 'python tools/...' command: {argv}"
    return Path(argv[1]).name


def _values(argv: list[str], flag: str) -> list[str]:
    """The values given after ``flag`` (up to the next flag)."""
    if flag not in argv:
        return []
    out = []
    for arg in argv[argv.index(flag) + 1:]:
        if arg.startswith("--"):
            break
        out.append(arg)
    return out


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def test_try_it_commands_name_existing_tools_configs_flags_and_values():
    commands = try_it_commands()
    assert len(commands) >= 7 and {"compare_methods.py", "fewshot.py", "transfer.py"} <= {_tool(c) for c in commands}
    _check_commands(commands)


def test_the_quick_look_names_existing_tools_and_flags_in_its_own_folders():
    quick = quick_look_commands()
    assert {"train.py", "base2novel.py", "fewshot.py"} <= {_tool(c) for c in quick}
    _check_commands(quick)
    for argv in quick:  # never the full path's folders, so neither block reuses the other's runs
        folder = _values(argv, "--work-dir") + _values(argv, "--work-root")
        assert folder and folder[0].startswith("work_dirs/quick/"), f"quick look writes outside work_dirs/quick: {argv}"
        assert _values(argv, "--seeds") in ([], ["1"]), f"quick look runs more than one seed: {argv}"


def test_each_try_it_block_states_each_commands_time_and_a_total_that_adds_up():
    for commands, after in try_it_blocks()[:2]:  # the full path and the quick look (not the real-data lines)
        rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
                for line in after.splitlines() if line.strip().startswith("|")]
        rows = [r for r in rows if not set(r[0]) <= set("-: ") and not r[0].startswith("Command")]
        assert len(rows) == len(commands) + 1, (
            f"README 'Try it': the table after {shlex.join(commands[0])}... needs one time per command and a total")
        for argv, (name, time) in zip(commands, rows[:-1], strict=True):
            assert _tool(argv) in name, f"README 'Try it': the time row {name!r} is not for {shlex.join(argv)}"
            assert _seconds(time) > 0
        name, total = rows[-1]
        assert "block" in name, f"README 'Try it': the last row {name!r} should be the block's total"
        parts = sum(_seconds(time) for _, time in rows[:-1])
        assert abs(_seconds(total) - parts) <= len(rows), f"README 'Try it': total {total}, the rows add to {parts} s"


@functools.cache
def _help(tool: str) -> str:
    proc = subprocess.run([sys.executable, tool, "--help"], cwd=ROOT, capture_output=True, text=True,
                          env=_env(), timeout=120)
    assert proc.returncode == 0, f"{tool} --help failed: {proc.stderr[-1000:]}"
    return proc.stdout


def _check_commands(commands: list[list[str]]) -> None:
    from vlprompt.datasets import get_protocol
    from vlprompt.engine.sweep import config_path

    for argv in commands:
        tool = _tool(argv)
        assert (ROOT / argv[1]).is_file(), f"README 'Try it': {argv[1]} does not exist"
        assert tool in SHORTEN, f"README 'Try it' runs {tool}: add how to shorten it to SHORTEN in {__file__}"
        for flag in [a for a in argv[2:] if a.startswith("--")] + [a for a in SHORTEN[tool] if a.startswith("--")]:
            assert re.search(rf"{re.escape(flag)}\b", _help(argv[1])), f"{argv[1]} --help has no {flag} ({argv})"
        for arg in argv[2:]:
            if arg.endswith(".py"):
                from vlprompt.engine.compose import config_exists  # a file, or a run composed from method + dataset

                assert config_exists(ROOT / arg), f"README 'Try it': config {arg} does not exist"
        for method in _values(argv, "--method") + _values(argv, "--methods"):
            assert (ROOT / "configs" / method).is_dir(), f"README 'Try it': no configs/{method}/ for {argv}"
        for method in _values(argv, "--method"):
            for dataset in _values(argv, "--datasets"):
                config_path(method, dataset)  # SystemExit naming the missing config
        for protocol in _values(argv, "--protocol"):
            get_protocol(protocol)


@pytest.mark.slow  # a zero-shot base-to-novel sweep (35 s)
def test_each_try_it_command_needs_only_what_the_earlier_ones_made(tmp_path, capsys):
    """compare_methods after the README's base2novel sweep, with nothing else made: it must make the
    zero-shot runs itself (today's runs of the sweep are stood in for by the result files it writes)."""
    compare_methods = load_tool("compare_methods")  # tools/compare_methods.py, by its file

    from vlprompt.engine.sweep import save_result
    from vlprompt.evaluation.report import harmonic_mean

    commands = try_it_commands()
    compare = next(c for c in commands if _tool(c) == "compare_methods.py")
    earlier = commands[:commands.index(compare)]
    sweeps = [c for c in earlier if _tool(c) == "base2novel.py"]
    made = {m for c in sweeps for m in _values(c, "--method")}
    assert made, "no README command before compare_methods.py runs a base-to-novel sweep"
    sweep = sweeps[-1]
    method, dataset, seed = _values(sweep, "--method")[0], _values(sweep, "--datasets")[0], _values(sweep, "--seeds")[0]
    backbone = {"name": "toy", "pretrained": "toy"}
    save_result(tmp_path / method / dataset / f"seed{seed}",
                {"method": method, "dataset": dataset, "seed": int(seed), "base": 60.0, "novel": 40.0,
                 "hm": harmonic_mean(60.0, 40.0), "seconds": 1.0, "config": {"model": {"backbone": backbone}}})

    table = compare_methods.main(compare[2:] + ["--work-root", str(tmp_path), "--datasets", dataset])
    for other in _values(compare, "--methods"):
        assert f"{other} HM" in table
    zsclip = json.loads((tmp_path / "zsclip" / dataset / f"seed{seed}" / "sweep_result.json").read_text())
    assert zsclip["config"]["model"]["backbone"]["name"] == "toy"  # the other runs' backbone
    assert 0 <= zsclip["base"] <= 100 and 0 <= zsclip["novel"] <= 100
    assert "no zsclip results under" in capsys.readouterr().out


@pytest.mark.slow
def test_the_try_it_commands_run_in_order_shortened(tmp_path):
    for name in ("configs", "tools"):
        (tmp_path / name).symlink_to(ROOT / name)
    for argv in try_it_commands():
        cmd = [sys.executable, *argv[1:], *SHORTEN[_tool(argv)]]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=900)
        assert proc.returncode == 0, f"README 'Try it' command failed: {shlex.join(argv)}\n{proc.stderr[-3000:]}"
    assert list((tmp_path / "work_dirs" / "base2novel" / "zsclip").glob("*/seed1/sweep_result.json"))
    assert (tmp_path / "work_dirs" / "fewshot" / "coop" / "fewshot.png").is_file()


def test_the_library_example_runs_as_written(tmp_path, monkeypatch):
    """The README's python block, with the trained file of the "Try it" commands stood in for by one
    written without training, and without the line that needs real ViT-B/16 weights on disk."""
    from helpers import write_learned

    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Library API\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Library API' section"
    code = re.search(r"```python\n(.*?)```", section.group(1), re.S).group(1)
    learned = re.search(r'load_prompted_clip\("([^"]+learned\.safetensors)"\)', code).group(1)
    write_learned(tmp_path / learned, class_names=("red circle", "green square"),
                  backbone={"name": "toy", "pretrained": "toy"})
    monkeypatch.chdir(tmp_path)
    runnable = "\n".join(line for line in code.splitlines() if "/data/" not in line)
    namespace: dict = {}
    exec(compile(runnable, "README.md", "exec"), namespace)  # noqa: S102  (the README's own example)
    assert namespace["probs"].shape == (4, 4) and len(namespace["images"]) == 4


def test_set_up_keeps_the_plain_install_first_and_shows_the_cpu_only_install():
    """Issue 31 item 8: the default stays ``pip install -e ".[dev]"``; a CPU-only user is shown PyTorch's
    CPU wheel index with the torch/torchvision pair the README says is tested and pyproject allows."""
    text = (ROOT / "README.md").read_text()
    setup = re.search(r"^## Set-up\n(.*?)(?=^## )", text, re.S | re.M)
    assert setup, "README.md has no '## Set-up' section"
    blocks = re.findall(r"```bash\n(.*?)```", setup.group(1), re.S)
    assert len(blocks) >= 2 and 'pip install -e ".[dev]"' in blocks[0].split("#")[0]
    cpu = next((b for b in blocks[1:] if "download.pytorch.org/whl/cpu" in b), None)
    assert cpu, "README Set-up shows no CPU-only install (PyTorch's CPU wheel index)"
    pins = dict(re.findall(r"\b(torch|torchvision)==([\d.]+)", cpu))
    assert set(pins) == {"torch", "torchvision"}, f"the CPU-only line should pin torch and torchvision: {cpu}"
    tested = re.search(r"torch ([\d.]+) \+ torchvision ([\d.]+)", setup.group(1))
    assert tested and (pins["torch"], pins["torchvision"]) == tested.groups(), "pinned pair is not the tested pair"
    upper = re.search(r'"torch>=[\d.]+,<=([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert upper and upper.group(1) == pins["torch"], "pyproject's torch bound is not the pinned CPU build"
    assert cpu.index("--index-url") < cpu.index('pip install -e ".[dev]"'), "torch's CPU build must come first"
