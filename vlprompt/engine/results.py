"""Machine-readable run results (``results.json``), written atomically, and the set of outputs a
training run ends with.

A training run's outputs are one set: ``learned.safetensors``, the ``results.json`` measured on it
and ``run.json`` saying the run finished. They are written in that order, each atomically, and
:func:`open_output_set` starts the set before a new learned file is written: ``run.json`` is marked
unfinished and the results measured on the learned file being replaced are removed. So a full disk
or a kill at any point leaves either the whole old set, or the new learned file without results
under an unfinished ``run.json`` (``--resume`` completes it), never one run's prompts beside
another's results.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..io import atomic_write_text

RESULTS_FILE = "results.json"
"""The results of a training run (its test after training), beside its ``learned.safetensors``."""


def run_description(cfg, model: dict | None = None) -> dict[str, Any]:
    """What a result needs to be traced back: dataset, split, subsample, shots, seed, model.

    ``num_shots`` is what the config asked for (``None``: all images); ``shots`` is what the
    training set really had per class (``requested``, ``min``, ``max`` and the ``short`` classes
    with their counts), recorded by ``build_runner`` in ``cfg.train_shots`` from the built dataset's
    ``shots`` (neither the config nor the model metadata reaches the dataset otherwise; the value
    is also in the config dump of the work dir).
    """
    test = (cfg.get("test_dataloader") or {}).get("dataset", {})
    shots = cfg.get("train_shots")
    if shots:
        shots = {**shots, "short": dict(shots.get("short") or [])}  # stored as [class, count] pairs
    return {
        "config": cfg.filename,
        "work_dir": cfg.work_dir,
        "dataset": test.get("name"),
        "subsample": test.get("subsample", "all"),
        "seed": (cfg.get("randomness") or {}).get("seed"),
        "num_shots": (cfg.get("train_dataloader") or {}).get("dataset", {}).get("num_shots"),
        "shots": shots,
        "protocol": cfg.get("protocol"),
        "model": model,
    }


def write_results(path: str | os.PathLike, metrics: dict[str, float], cfg, model: dict | None = None,
                  **extra: Any) -> Path:
    """``{"metrics": ..., "run": ...}`` as JSON at ``path`` (``model``: the model's metadata)."""
    record = {"metrics": {k: float(v) for k, v in metrics.items()}, "run": run_description(cfg, model),
              "time": time.strftime("%Y-%m-%d %H:%M:%S"), **extra}
    return atomic_write_text(path, json.dumps(record, indent=2, default=str))


def _measures(path: Path, learned: Path) -> bool:
    """Whether the results file ``path`` (``tools/test.py``'s ``test_*.json``) names ``learned`` as its checkpoint."""
    try:
        checkpoint = json.loads(path.read_text()).get("checkpoint")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(checkpoint, str) and Path(checkpoint).resolve() == learned.resolve()


def open_output_set(work_dir: str | os.PathLike, learned_name: str = "learned.safetensors") -> list[Path]:
    """Begin a new set of final outputs in ``work_dir``, before its ``learned_name`` is (re)written.

    The work dir's ``run.json`` (if any) is marked unfinished, then the results measured on the learned
    file about to be replaced are removed: ``results.json`` and any ``test_*.json`` naming that file as
    its checkpoint. Returns the removed files. ``run.json`` is marked finished again once the results of
    the new learned file are written (``tools/train.py``).
    """
    from .checkpoint import read_run_record, write_run_record

    work_dir = Path(work_dir)
    record = read_run_record(work_dir)
    if record is not None and record.get("finished") is not False:
        write_run_record(work_dir, {**record, "finished": False})
    learned = work_dir / learned_name
    stale = [work_dir / RESULTS_FILE] + [p for p in sorted(work_dir.glob("test_*.json")) if _measures(p, learned)]
    removed = []
    for path in stale:
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed
