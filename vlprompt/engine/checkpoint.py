"""Checkpoints on the training side: starting from another run's prompts, resuming, the work-dir checks.

Reading what training wrote and rebuilding a learner from it is :mod:`vlprompt.learned` (no
mmengine), re-exported here: every name a file holds is checked against vlprompt's registries
before anything is built from it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from ..backbones import CheckpointError
from ..io import atomic_write_text
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
from ..learners import settings_as_built
from ..workdir import (  # noqa: F401  (re-exported: the names this module had)
    RUN_OUTPUTS,
    RUN_RECORD,
    read_run_record,
    run_outputs,
    step_checkpoints,
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
    settings = " ".join(f"{k}={v!r}" for k, v in learner.items()
                        if k != "type" and not k.endswith("_text"))  # not the descriptions' recorded text
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
    built = settings_as_built(wanted)  # what the learner records: n_ctx=80 with a 4-token phrase records 4
    wanted_backbone = (model_cfg.get("backbone") or {}).get("name")
    had, had_backbone = meta["learner"], (meta.get("backbone") or {}).get("name")
    differs = wanted.get("type") != had.get("type") or wanted_backbone != had_backbone or any(
        key in had and comparable(had[key]) != comparable(value) for key, value in built.items())
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


# ---------------------------------------------------------------------------- the run a work dir holds

class WorkDirConflict(CheckpointError):
    """A work dir holds the outputs of another run, or of this run, that training would overwrite."""


def _legacy_record(work_dir: Path) -> dict:
    """What a work dir written before :data:`RUN_RECORD` existed says of its run: the config it names
    and its learner, from ``results.json`` or the newest checkpoint; finished when training wrote its
    learned prompts."""
    found: dict[str, Any] = {"finished": (work_dir / "learned.safetensors").is_file()}
    try:
        run = json.loads((work_dir / "results.json").read_text()).get("run") or {}
        found.update(config=run.get("config"), model=run.get("model"))
    except (OSError, ValueError, AttributeError):
        pass
    for checkpoint in step_checkpoints(work_dir)[:1]:
        try:
            meta = torch_load_plain(checkpoint, checkpoint).get("vlprompt") or {}
        except (CheckpointError, AttributeError):
            continue
        found.setdefault("config", meta.get("config"))
        if not found.get("model"):
            found["model"] = {"learner": meta.get("learner"), "backbone": meta.get("backbone")}
    return found


def _same_file(a: str | None, b: str | None) -> bool:
    return bool(a and b) and (a == b or Path(a).resolve() == Path(b).resolve())


def claim_work_dir(work_dir: str | os.PathLike, *, name: str, config_file: str, settings: dict, model_cfg: dict,
                   resume: bool, overwrite: bool) -> str:
    """Check what ``work_dir`` holds before a run named ``name`` trains into it, and record the run.

    Returns ``"fresh"`` (nothing there, or ``overwrite`` cleared the outputs of what was), or
    ``"resume"`` (``resume`` and a run of the same config whose checkpoints fit the learner; other
    settings, such as a longer schedule, are named in a warning). Refuses (:class:`WorkDirConflict`,
    naming the folder, both runs and the way out) to mix two runs: another config's or another
    learner's outputs; without ``resume``, this config's with other settings, this run finished
    (``--overwrite`` trains it again) or unfinished (``--resume`` continues it).
    Call it under the work dir's lock.
    """
    from .config import config_differences, json_plain, show_value

    work_dir = Path(work_dir)
    outputs = run_outputs(work_dir)
    record = read_run_record(work_dir)
    wanted = json_plain({"learner": dict(model_cfg.get("learner") or {}),
                         "backbone": (model_cfg.get("backbone") or {}).get("name")})
    if outputs and overwrite:
        for path in outputs:
            path.unlink(missing_ok=True)
        logger.warning("--overwrite: removed the outputs of the run %s held (%s)", work_dir,
                       ", ".join(p.name for p in outputs))
        outputs, record = [], None
    written = [p for p in outputs if p.name != RUN_RECORD]
    if written:
        shown = ", ".join(p.name for p in written[:6]) + (f" and {len(written) - 6} more" if len(written) > 6 else "")
        held = record or _legacy_record(work_dir)
        other_config = held.get("config_file") or held.get("config")
        model = held.get("model") or {}
        had_learner = model.get("learner") if isinstance(model.get("learner"), dict) else {}
        had_backbone = (model.get("backbone") or {}).get("name") if isinstance(model.get("backbone"), dict) \
            else model.get("backbone")
        other_learner = had_learner and (had_learner.get("type") != wanted["learner"].get("type")
                                         or (had_backbone and had_backbone != wanted["backbone"]))
        if (record and record.get("name") != name) or (not record and other_config and
                                                         not _same_file(other_config, config_file)) or other_learner:
            who = record.get("name") if record else other_config or "an unknown config"
            raise WorkDirConflict(
                f"{work_dir} holds another run ({who}: {shown}); this is {name} ({config_file}); "
                f"use another --work-dir (the default, work_dirs/<method>/<dataset>, is one per run) "
                f"or --overwrite to replace that run's outputs")
        diffs = config_differences(record.get("settings") or {}, settings) if record else []
        if diffs:
            listed = ", ".join(f"{k}: {show_value(a)} -> {show_value(b)}" for k, a, b in diffs[:6])
            listed += f" and {len(diffs) - 6} more" if len(diffs) > 6 else ""
            if not resume:
                raise WorkDirConflict(f"{work_dir} holds a run of {name} with other settings ({listed}); "
                                      f"use another --work-dir, or --overwrite to replace it")
            check_work_dir_run(work_dir, None, model_cfg, config_file)  # another learner: refused, not warned of
            logger.warning("--resume: %s goes on with other settings than it started with (%s)", work_dir, listed)
        finished = record.get("finished") if record else held.get("finished")
        if finished:
            if not resume:
                raise WorkDirConflict(f"{work_dir} holds a finished run of {name} ({shown}); --overwrite trains "
                                      f"it again, another --work-dir keeps both")
        elif not resume:
            last = step_checkpoints(work_dir)
            where = f"its last checkpoint is {last[0].name}" if last else "it wrote no checkpoint yet"
            raise WorkDirConflict(f"{work_dir} holds an unfinished run of {name} ({where}); --resume continues "
                                  f"it, --overwrite starts it over")
        check_work_dir_run(work_dir, None, model_cfg, config_file)  # its checkpoints fit this learner
        state = "resume"
    else:
        state = "fresh"
    write_run_record(work_dir, {"name": name, "config_file": config_file, "model": wanted, "settings": settings,
                                "finished": False, "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    return state


def write_run_record(work_dir: str | os.PathLike, record: dict) -> None:
    """Store ``record`` as the work dir's :data:`RUN_RECORD` (atomically)."""
    atomic_write_text(Path(work_dir) / RUN_RECORD, json.dumps(record, indent=2))


def mark_run_finished(work_dir: str | os.PathLike) -> None:
    """Record that the run in ``work_dir`` finished (its outputs are complete)."""
    record = read_run_record(work_dir)
    if record is not None:
        write_run_record(work_dir, {**record, "finished": True, "ended": time.strftime("%Y-%m-%d %H:%M:%S")})
