"""Checkpoints on the training side: starting from another run's prompts, resuming, the work-dir checks.

Reading what training wrote and rebuilding a learner from it is :mod:`vlprompt.learned` (no
mmengine), re-exported here: every name a file holds is checked against vlprompt's registries
before anything is built from it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from ..backbones import CheckpointError
from ..learned import (  # noqa: F401  (re-exported: the library side, vlprompt.learned)
    BACKBONE_KEYS,
    check_state_fits,
    learner_spec,
    load_learned_into,
    load_learner,
    read_learned,
    read_vlprompt_safetensors,
    torch_load_plain,
    value_kind,
)

logger = logging.getLogger("vlprompt")


def check_source_checkpoint(path: str | os.PathLike, model_cfg: dict) -> None:
    """Stop a run that starts from a prompt checkpoint of another prompt family or backbone.

    ``path`` is a ``load_from`` (``learned.safetensors`` or ``epoch_N.pth``) whose learned parameters
    initialise the configured learner (``model_cfg``: the config's ``model``); class-dependent
    buffers are rebuilt for the run's own classes. Raises :class:`CheckpointError` naming both
    sides before any data is read.
    """
    _, meta = read_learned(path)
    if not isinstance(meta, dict) or not meta.get("learner") or not meta.get("backbone"):
        raise CheckpointError(f"{path}: no vlprompt metadata (backbone, learner): it cannot start a prompt learner")
    source_learner, source_arch = meta["learner"].get("type"), meta["backbone"].get("name")
    learner_type = (model_cfg.get("learner") or {}).get("type")
    arch = (model_cfg.get("backbone") or {}).get("name")
    if source_learner != learner_type or source_arch != arch:
        raise CheckpointError(
            f"load_from={path}: its prompts are {source_learner!r} on backbone {source_arch!r}, but this config "
            f"trains {learner_type!r} on {arch!r}; a source prompt starts only the same prompt family on the "
            f"same architecture")


# ---------------------------------------------------------------------------- resuming

_STEP = re.compile(r"(?:epoch|iter)_(\d+)\.pth$")


def step_checkpoints(work_dir: str | os.PathLike) -> list[Path]:
    """The ``epoch_N.pth`` / ``iter_N.pth`` files of ``work_dir``, newest (highest N) first."""
    found = (p for p in Path(work_dir).glob("*.pth") if _STEP.search(p.name))
    return sorted(found, key=lambda p: int(_STEP.search(p.name)[1]), reverse=True)


def find_resume_checkpoint(work_dir: str | os.PathLike) -> str | None:
    """The newest checkpoint of ``work_dir`` that loads, for ``--resume`` without a path.

    ``last_checkpoint`` is tried first; when it is empty, names a missing file or a file that does
    not load (a kill or a full disk mid-write), the newest loadable ``epoch_N.pth``/``iter_N.pth``
    is used instead, with a warning naming both. ``None`` when the folder has no checkpoint at all;
    an error naming every file when none of them loads.
    """
    work_dir = Path(work_dir)
    pointer = work_dir / "last_checkpoint"
    named = pointer.read_text().strip() if pointer.is_file() else ""
    found = step_checkpoints(work_dir)
    candidates = ([Path(named)] if named else []) + [p for p in found if not named or p != Path(named)]
    if not candidates:
        return None
    failures = []
    for candidate in candidates:
        if not candidate.is_file():
            failures.append(f"{candidate}: missing")
            continue
        try:
            torch_load_plain(candidate, candidate)
        except CheckpointError as err:
            failures.append(str(err))
            continue
        if failures or not named:
            why = "; ".join(failures) or ("last_checkpoint is empty" if pointer.is_file() else "no last_checkpoint")
            logger.warning("--resume: %s; resuming from %s, the newest checkpoint that loads", why, candidate)
        return str(candidate)
    raise CheckpointError(f"--resume: no checkpoint in {work_dir} loads: " + "; ".join(failures))


def describe_run(learner: dict, backbone: Any) -> str:
    """``learner 'coop' n_ctx=4 ... on backbone 'toy'``: a run's learner and backbone, for errors naming two runs."""
    settings = " ".join(f"{k}={v!r}" for k, v in learner.items() if k != "type")
    return f"learner {learner.get('type')!r}{' ' + settings if settings else ''} on backbone {backbone!r}"


def check_work_dir_run(work_dir: str | os.PathLike, checkpoint: str | os.PathLike | None, model_cfg: dict,
                       config: str | os.PathLike) -> None:
    """Refuse to train into a work dir whose checkpoint ``checkpoint`` (the one ``--resume`` would
    load, else the newest there) came from another learner, backbone or prompt layout than
    ``model_cfg`` asks for, naming the work dir and both configs, before anything is loaded."""
    if checkpoint is None:
        found = step_checkpoints(work_dir)
        if not found:
            return
        checkpoint = found[0]
    try:
        meta = torch_load_plain(checkpoint, checkpoint).get("vlprompt")
    except (CheckpointError, AttributeError):
        return  # unreadable: --resume reports it; a fresh run overwrites it
    if not isinstance(meta, dict) or not isinstance(meta.get("learner"), dict):
        return
    wanted = dict(model_cfg.get("learner") or {})
    wanted_backbone = (model_cfg.get("backbone") or {}).get("name")
    had, had_backbone = meta["learner"], (meta.get("backbone") or {}).get("name")
    differs = wanted.get("type") != had.get("type") or wanted_backbone != had_backbone or any(
        key in had and comparable(had[key]) != comparable(value) for key, value in wanted.items())
    if differs:
        raise CheckpointError(
            f"{work_dir} holds checkpoints of another run: {checkpoint} is {describe_run(had, had_backbone)} "
            f"(config {meta.get('config') or 'unknown'}), but {config} asks for "
            f"{describe_run(wanted, wanted_backbone)}; use another --work-dir (the default is "
            f"work_dirs/<method>/<config name>) or move those checkpoints away"
        )


def comparable(value: Any) -> Any:
    """A setting as a config and a JSON file both give it (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value
