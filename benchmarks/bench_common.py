"""What the benchmarks share: running one configuration in a process of its own."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys


def run_isolated(cfg: dict, script: str, command: str | None = None) -> dict:
    """Run one configuration in a fresh Python process, so that its peak memory is its own: the
    benchmark's ``--worker`` mode, or ``command`` (an outside implementation's template, formatted
    with ``cfg``). The process's last ``RESULT {json}`` line is merged into ``cfg``; a process that
    printed none gives ``cfg`` with an ``error``."""
    argv = shlex.split(command.format(**cfg)) if command else [sys.executable, script, "--worker", json.dumps(cfg)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return {**cfg, **json.loads(line[len("RESULT "):])}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    reason = "killed (out of memory?)" if proc.returncode in (-9, 137) else " / ".join(tail) or f"rc {proc.returncode}"
    return dict(cfg, error=reason)
