"""Pieces shared by the sweep tools: where a method's config is, and running one logged step."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


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
