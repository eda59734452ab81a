"""checkout_guard (issue 31, item 8): a run whose tests leave files in the checkout fails, naming them, also under
pytest-xdist; a run whose tests write into tmp_path passes. Each case is a small pytest run in a subprocess whose
rootdir (its "checkout") is a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import ROOT

LEAVES_A_RUN = """
import os
def test_a_run_without_work_dir():
    os.makedirs("work_dirs/coop/toy_shapes/20260101_000000", exist_ok=True)
    open("work_dirs/coop/toy_shapes/20260101_000000/20260101_000000.log", "w").write("log")
def test_clean(tmp_path):
    (tmp_path / "out.txt").write_text("fine")
"""
CLEAN = """
def test_clean(tmp_path):
    (tmp_path / "work_dirs").mkdir()
def test_clean_too(tmp_path):
    (tmp_path / "results.json").write_text("{}")
"""


def _run(tmp_path, tests: str, *args: str) -> subprocess.CompletedProcess:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "pytest.ini").write_text("[pytest]\n")
    (checkout / "test_inner.py").write_text(tests)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "checkout_guard", "-p", "no:cacheprovider",
                           "--rootdir", str(checkout), "-c", str(checkout / "pytest.ini"), "-q", *args,
                           "test_inner.py"], cwd=checkout, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("workers", [[], ["-p", "xdist", "-n", "2"]], ids=["one process", "xdist -n 2"])
def test_files_left_in_the_checkout_fail_the_run(tmp_path, workers):
    run = _run(tmp_path, LEAVES_A_RUN, *workers)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "2 passed" in out and "files written into the checkout" in out, out
    assert "  work_dirs\n" in out and "20260101_000000.log" not in out, out  # the topmost new folder, once
    assert out.count("tests wrote 5 new file(s) or folder(s) into the checkout") == 1, out


def test_tests_writing_into_tmp_path_pass(tmp_path):
    run = _run(tmp_path, CLEAN, "-p", "xdist", "-n", "2")
    assert run.returncode == 0 and "files written into the checkout" not in run.stdout, run.stdout + run.stderr
