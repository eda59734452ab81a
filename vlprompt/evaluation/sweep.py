"""Pieces shared by the sweep tools: where a method's config is, running one logged step, and the
result file that marks a run as finished (so an interrupted sweep skips what is done)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ..engine.results import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULT_FILE = "sweep_result.json"
"""Written last in a run's folder, atomically: its presence means the run finished."""


def config_path(method: str, dataset: str, root: Path = REPO_ROOT) -> Path:
    """``configs/<method>/<dataset with underscores>.py``, or an error listing what exists."""
    path = root / "configs" / method / f"{dataset.replace('-', '_')}.py"
    if not path.is_file():
        available = sorted(p.stem for p in (root / "configs" / method).glob("[!_]*.py"))
        raise SystemExit(f"no config for {method} on {dataset}: {path} does not exist "
                         f"(available for {method}: {', '.join(available) or 'none'})")
    return path


def run_logged(cmd: list[str], log: Path, cwd: Path = REPO_ROOT) -> None:
    """Run ``cmd`` with its output appended to ``log``; a failure names the command and the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}; see {log}")


def read_top1(path: Path) -> float:
    """Top-1 accuracy from a ``results.json`` written by tools/train.py or tools/test.py."""
    return json.loads(Path(path).read_text())["metrics"]["accuracy/top1"]


def finished_result(run_dir: Path) -> dict | None:
    """The stored result of a finished run, or ``None`` if the run has not finished."""
    path = Path(run_dir) / RESULT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def save_result(run_dir: Path, result: dict) -> dict:
    """Store a run's result (atomically: a half-written file never marks a run as finished)."""
    atomic_write_text(Path(run_dir) / RESULT_FILE, json.dumps(result, indent=2))
    return result


def read_base2novel_results(method_dir: str | Path) -> list[dict]:
    """Every finished run of a base-to-novel sweep: ``<method_dir>/<dataset>/seed<S>/``."""
    return [json.loads(p.read_text()) for p in sorted(Path(method_dir).glob(f"*/seed*/{RESULT_FILE}"))]
