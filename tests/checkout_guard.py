"""Tests write only into temporary folders: a pytest plugin that fails the run naming what a test left in the
checkout (pytest's rootdir), such as the ``work_dirs/<method>/<config>/<timestamp>/`` of a run given no work dir.

The top ``conftest.py`` imports its hooks. The checkout is listed when the session starts and again when it
ends, in the process that runs before and ends after every test (under pytest-xdist the controller, not the
workers). Only new files and folders count, outside :data:`CACHE_FOLDERS` and ``*.egg-info``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CACHE_FOLDERS = (".git", ".pytest_cache", "__pycache__", ".venv", ".ruff_cache", ".mypy_cache")
"""Folders that pytest, Python and the linters may write to (the tests' ``VLPROMPT_CACHE`` is in .pytest_cache)."""
_BEFORE = pytest.StashKey[set]()


def checkout_paths(root: Path) -> set[str]:
    """Every file and folder below ``root`` (relative paths), outside :data:`CACHE_FOLDERS` and ``*.egg-info``."""
    found = set()
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in CACHE_FOLDERS and not d.endswith(".egg-info")]
        rel = os.path.relpath(folder, root)
        found.update(os.path.normpath(os.path.join(rel, name)) for name in subfolders + files)
    return found


def _is_controller(config: pytest.Config) -> bool:
    """Not one of pytest-xdist's workers (they have ``workerinput``)."""
    return not hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    if _is_controller(session.config):
        session.config.stash[_BEFORE] = checkout_paths(session.config.rootpath)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail a run that left new files or folders in the checkout, naming them (the topmost new ones)."""
    before = session.config.stash.get(_BEFORE, None)
    if before is None:
        return
    root = session.config.rootpath
    new = checkout_paths(root) - before
    if not new:
        return
    tops = sorted(p for p in new if not any(str(parent) in new for parent in Path(p).parents))
    lines = [f"tests wrote {len(new)} new file(s) or folder(s) into the checkout {root}; tests write into "
             "tmp_path. New (run the folder with -n 0 to see which test; delete them before the next run):",
             *(f"  {p}" for p in tops[:20]), *(["  ..."] if len(tops) > 20 else [])]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")  # after the progress dots
        reporter.section("files written into the checkout", sep="=", red=True, bold=True)
        for line in lines:
            reporter.write_line(line, red=True)
    else:
        print("\n".join(lines))
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
