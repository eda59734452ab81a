"""A whole GRAM meta-training run from a config: pairs -> features -> hierarchy -> meta-steps -> file.

The config (``configs/gram/meta_*.py``) has ``backbone``, ``learner`` (the downstream learner's
settings, exactly), ``pairs`` (:class:`~vlprompt.datasets.pairs.PairSource`), ``clustering``
(:class:`~vlprompt.meta.tasks.ClusterSettings`), ``tasks`` (:class:`~vlprompt.meta.tasks.TaskSettings`),
``meta`` (:class:`~vlprompt.meta.gram.MetaSettings`), ``regulator`` and ``encode_batch_size``. The work
dir keeps the feature cache, a resumable ``meta_state.pth`` (every ``meta.checkpoint_interval`` steps,
written atomically) and finally ``gram.safetensors`` + ``meta_log.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..backbones import CheckpointError
from ..datasets.pairs import build_pair_source
from ..engine.checkpoint import torch_load_plain
from ..errors import ConfigError
from ..io import atomic_write, atomic_write_text, config_hash
from .features import encode_pairs
from .gram import (
    GRAM_FILE,
    STATE_FILE,
    MetaLearner,
    MetaSettings,
    build_meta_learner,
    save_gram_file,
    uses_frozen_image_features,
)
from .tasks import ClusterSettings, TaskSampler, TaskSettings, cross_modal_hierarchy

LOG_FILE = "meta_log.json"
SECTIONS = ("backbone", "learner", "pairs", "clustering", "tasks", "meta", "regulator")
_PLACEHOLDER_CLASSES = ["object", "shape"]


def _plain(cfg: Any) -> Any:
    if hasattr(cfg, "to_dict"):
        cfg = cfg.to_dict()
    if isinstance(cfg, Mapping):
        return {k: _plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [_plain(v) for v in cfg]
    return cfg


def _settings(cls, section: str, cfg: Mapping[str, Any] | None):
    try:
        return cls(**dict(cfg or {}))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config section {section!r}: {err}") from None


def resolve_downstream(cfg: Any) -> Any:
    """``cfg`` with ``backbone`` and ``learner`` taken from the run its ``downstream`` names (a config
    path relative to ``cfg``'s file, composed like any run): a GRAM file only starts that learner."""
    downstream = cfg.get("downstream")
    if downstream:
        from ..engine.config import load_config

        run = load_config(Path(cfg.filename).parent / downstream)
        cfg.backbone, cfg.learner = run.model.backbone, run.model.learner
    return cfg


def meta_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The sections that define a meta-training (what a resumed run must share), checked."""
    plain = {k: _plain(cfg.get(k)) for k in SECTIONS}
    for key in ("backbone", "learner", "pairs"):
        if not isinstance(plain[key], dict) or not plain[key]:
            raise ConfigError(f"a meta-training config needs a {key!r} section")
    if "type" not in plain["learner"]:
        raise ConfigError("config section 'learner' needs type= (a registered learner name)")
    plain["regulator"] = plain["regulator"] or {"type": "gate"}
    _settings(ClusterSettings, "clustering", plain["clustering"])
    _settings(TaskSettings, "tasks", plain["tasks"])
    _settings(MetaSettings, "meta", plain["meta"])
    return plain


RESUME_FREE = ("iterations", "checkpoint_interval")
"""``meta`` settings a resumed run may change (train longer, save more often)."""


def resume_hash(plain: Mapping[str, Any]) -> str:
    """What a resumed run must share with the state it continues (all but :data:`RESUME_FREE`)."""
    meta = {k: v for k, v in (plain.get("meta") or {}).items() if k not in RESUME_FREE}
    return config_hash({**plain, "meta": meta}, length=16, compact=False)


def _save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def meta_train(
    cfg: Mapping[str, Any],
    work_dir: str | os.PathLike,
    resume: bool = True,
    on_step: Callable[[dict[str, float]], None] | None = None,
    on_pairs: Callable[[int], None] | None = None,
    log: Callable[[str], None] = print,
    config_name: str = "",
) -> Path:
    """Meta-train as ``cfg`` says into ``work_dir``; returns the ``gram.safetensors`` path.

    A state left by an interrupted run of the same config is resumed (``resume=False`` starts over);
    one from another config stops the run, naming both hashes, before anything is computed. The whole
    run holds the work dir's lock (:func:`~vlprompt.workdir.work_dir_lock`): a second run into the
    same work dir is refused with :class:`~vlprompt.workdir.WorkDirLocked`, naming the holder,
    before it reads or writes anything (two runs would interleave states and one result would be lost).
    """
    from ..workdir import work_dir_lock

    meta_config(cfg)  # a bad config is answered before the work dir is made
    with work_dir_lock(work_dir):
        return _meta_train_locked(cfg, Path(work_dir), resume, on_step, on_pairs, log, config_name)


def _meta_train_locked(
    cfg: Mapping[str, Any],
    work_dir: Path,
    resume: bool,
    on_step: Callable[[dict[str, float]], None] | None,
    on_pairs: Callable[[int], None] | None,
    log: Callable[[str], None],
    config_name: str,
) -> Path:
    """:func:`meta_train`'s work, under the work dir's lock."""
    plain = meta_config(cfg)
    key = resume_hash(plain)
    work_dir.mkdir(parents=True, exist_ok=True)
    state_path, gram_path = work_dir / STATE_FILE, work_dir / GRAM_FILE
    state = None
    if resume and state_path.is_file():
        state = torch_load_plain(state_path, state_path)
        if not isinstance(state, dict):
            raise CheckpointError(f"{state_path}: not a meta-training state (a {type(state).__name__}, not a mapping)"
                                  "; --restart starts over")
        if state.get("config_hash") != key:
            raise CheckpointError(
                f"{state_path} is the state of another meta-training (config hash {state.get('config_hash')}, "
                f"{state.get('config_name') or 'unknown config'}), not of this config ({key}); use another "
                f"--work-dir or --restart")
    settings = _settings(MetaSettings, "meta", plain["meta"])
    if state is not None and state["iteration"] >= settings.iterations and gram_path.is_file():
        log(f"{gram_path}: already meta-trained ({state['iteration']} iterations); --restart to redo it")
        return gram_path

    torch.manual_seed(settings.seed)  # a random prompt init (or a random-init test backbone) is reproducible
    learner, regulator = build_meta_learner(plain["learner"], plain["backbone"], plain["regulator"],
                                            _PLACEHOLDER_CLASSES)
    source = build_pair_source(plain["pairs"])
    keep_images = not uses_frozen_image_features(learner)
    start = time.perf_counter()
    features = encode_pairs(source, learner.backbone, work_dir, keep_images=keep_images,
                            batch_size=int(cfg.get("encode_batch_size") or 256), progress=on_pairs)
    stats = features.stats or {}
    log(f"pairs: {stats.get('read', len(features))} read, skipped {stats.get('skipped') or 'none'} "
        f"({time.perf_counter() - start:.1f} s, features cached in {work_dir})")
    hierarchy = cross_modal_hierarchy(features, _settings(ClusterSettings, "clustering", plain["clustering"]))
    log(f"hierarchy: {hierarchy.summary()}")
    sampler = TaskSampler(hierarchy, _settings(TaskSettings, "tasks", plain["tasks"]))
    meta = MetaLearner(learner, regulator, features, sampler, settings)
    if state is not None:
        meta.load_state_dict(state, state_path)
        log(f"resumed from {state_path} at meta-iteration {meta.iteration}")
    step_seconds = float(state.get("step_seconds", 0.0)) if state is not None else 0.0
    while meta.iteration < settings.iterations:
        t0 = time.perf_counter()
        record = meta.meta_step()
        step_seconds += time.perf_counter() - t0
        if on_step is not None:
            on_step(record)
        if meta.iteration % settings.checkpoint_interval == 0 or meta.iteration == settings.iterations:
            _save_state(state_path, {**meta.state_dict(), "config_hash": key, "config_name": config_name,
                                     "step_seconds": step_seconds})
    tasks_per_second = meta.iteration * settings.meta_batch / step_seconds if step_seconds else float("nan")
    info = {"config": config_name, "config_hash": key, "iterations": meta.iteration,
            "tasks_per_second": tasks_per_second, "pairs": stats, "hierarchy": hierarchy.summary(),
            "settings": {k: plain[k] for k in ("pairs", "clustering", "tasks", "meta")},
            "reimplemented_from_paper": True}
    save_gram_file(gram_path, learner, plain["backbone"], regulator, info)
    atomic_write_text(work_dir / LOG_FILE, json.dumps({"info": info, "history": meta.history}, indent=1, default=str))
    log(f"meta-training: {meta.iteration} iterations, {tasks_per_second:.2f} tasks/s; wrote {gram_path}")
    return gram_path


__all__ = ["LOG_FILE", "meta_config", "meta_train", "resume_hash"]
