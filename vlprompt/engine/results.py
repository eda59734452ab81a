"""Machine-readable run results (``results.json``), written atomically."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..io import atomic_write_text


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
