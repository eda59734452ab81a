"""Pieces shared by the sweep tools: where a method's config is, running one logged step, and the
result file that marks a run as finished (so an interrupted sweep skips what is done).

A finished run records the effective config it was trained with (the config file resolved with
the run's ``--cfg-options``, less :data:`VOLATILE_KEYS`) and its hash. :func:`plan_runs` checks
every run of a sweep before the first one starts: a finished run is reused only when its record
matches what the sweep asks for; otherwise the sweep stops naming the run folder and the keys that
differ, unless ``overwrite`` is given. :func:`run_or_reuse` runs one run under the work dir lock
(:mod:`vlprompt.workdir`) and stores its result with the config. The run folders' own bookkeeping is the
light :mod:`vlprompt.runs` (its names are re-exported here); this module adds what needs the config system.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from mmengine.config import DictAction

from .. import runs
from ..runs import (  # noqa: F401  (re-exported: the sweeps' names since before they moved)
    MAX_LISTED,
    REPO_ROOT,
    RESULT_FILE,
    SWEEP_RESUME_HINT,
    TRAIN_RESUME,
    SweepRun,
    finished_result,
    read_top1,
    refusal,
    run_logged,
    save_result,
    took,
    verdict,
)
from .config import (  # noqa: F401  (re-exported: the sweeps' names since before they moved)
    VOLATILE_KEYS,
    config_differences,
    input_file_digests,
    json_plain,
    load_config,
    plain_config,
    show_value,
)

COOP_FEWSHOT_EPOCHS = {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}
"""CoOp's few-shot schedule: epochs per shot count (ImageNet: 50 for every shot count)."""


def fewshot_epochs(dataset: str, shots: int) -> int | None:
    """CoOp's few-shot epochs for ``shots`` shots of ``dataset``; ``None`` for a toy dataset, which keeps
    its config's shortened schedule."""
    from ..datasets.toyworld import TOY_DATASETS

    if dataset in TOY_DATASETS:
        return None
    return 50 if dataset == "imagenet" else COOP_FEWSHOT_EPOCHS.get(shots, 200)


def config_path(method: str, dataset: str, root: Path = REPO_ROOT) -> Path:
    """``configs/<method>/<dataset's one name, with underscores>.py`` (any spelling of the dataset: ``toy_shapes``
    and ``toy-shapes`` are one config): a file, or a run composed from the method's recipe and the dataset's
    facts (:mod:`vlprompt.engine.compose`); an unknown method or dataset is refused at once, naming the
    closest ones."""
    from ..errors import ConfigNotFoundError
    from .compose import canonical_config, check_method, split_leaf

    path = root / "configs" / method / f"{dataset.replace('-', '_')}.py"
    if path.is_file():
        return path
    try:
        check_method(method, root / "configs")
        split_leaf(path.stem)
    except (ConfigNotFoundError, KeyError) as err:
        raise SystemExit(f"no config for {method} on {dataset}: {err.args[0]}") from None
    return Path(canonical_config(path))


def read_base2novel_results(method_dir: str | Path) -> list[dict]:
    """Every finished run of a base-to-novel sweep: ``<method_dir>/<dataset>/seed<S>/``."""
    return [json.loads(p.read_text()) for p in sorted(Path(method_dir).glob(f"*/seed*/{RESULT_FILE}"))]


def parse_options(options: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings parsed exactly as tools/train.py's ``--cfg-options`` parses them."""
    namespace = argparse.Namespace()
    for option in options:
        if "=" not in option:
            raise SystemExit(f"--cfg-options: {option!r} is not key=value")
    DictAction(["--cfg-options"], "cfg_options")(argparse.ArgumentParser(), namespace, list(options))
    return namespace.cfg_options


def effective_config(config: str | Path, options: Sequence[str] = ()) -> dict[str, Any]:
    """The config a run of ``config`` with ``options`` trains with, as plain JSON, less
    :data:`VOLATILE_KEYS`. Only the config file is read: no dataset or model is built."""
    overrides = parse_options(options) or None
    try:
        cfg = load_config(config, None, overrides)
    except Exception as err:  # a bad override or config file: name both
        raise SystemExit(f"cannot load {config} with --cfg-options {' '.join(options) or '(none)'}: {err}") from err
    return plain_config(cfg)


NOT_SETTINGS = ("data_root", "input_files")
"""Recorded keys a report does not list as changed settings: where the data lives, and the digests of
the files a config names (their paths are settings; the digests follow from them)."""


@lru_cache(maxsize=256)
def _shipped(config_file: str, implied: tuple[str, ...]) -> str:
    return json.dumps(effective_config(config_file, implied))


def changed_settings(result: Mapping, implied: Sequence[str] = ()) -> dict[str, Any] | None:
    """``{dotted key: value}`` of the settings a finished run (its :data:`RESULT_FILE` record) was
    trained with that differ from its shipped config (``config_file`` as it is now, with the sweep's
    own per-run options ``implied``: seed, shots, schedule, protocol); ``None`` when the run recorded
    no config. Read from the record, not from the sweep's options, so a run an earlier sweep made with
    other ``--cfg-options`` shows them too. :data:`NOT_SETTINGS` are left out."""
    recorded, config_file = result.get("config"), result.get("config_file")
    if not isinstance(recorded, dict) or not config_file:
        return None
    path = Path(config_file)
    path = path if path.is_absolute() else REPO_ROOT / path
    shipped = json.loads(_shipped(str(path), tuple(implied)))
    return {key: new for key, _, new in config_differences(shipped, recorded)
            if key.split(".")[0] not in NOT_SETTINGS}


def option_settings(options: Iterable[str]) -> list[str]:
    """The user's ``key=value`` options as a report's changed settings (:data:`NOT_SETTINGS` left out):
    for tools whose runs keep no config record to read them from (tools/tta.py, tools/active.py)."""
    return sorted(o for o in options if o.split("=", 1)[0].split(".")[0] not in NOT_SETTINGS)


def plan_runs(runs: Sequence[SweepRun], overwrite: bool = False) -> list[SweepRun]:
    """Resolve every run's effective config and check it against the run's record, before any
    training starts. Without ``overwrite``, a finished run that does not match stops the sweep
    (SystemExit naming each such run folder and the differing keys with both values)."""
    conflicts = []
    for run in runs:
        run.config = {}
        _, conflict = verdict(plan_run(run))
        if conflict:
            conflicts.append(conflict)
    if conflicts and not overwrite:
        raise refusal(conflicts)
    for conflict in conflicts:
        print(f"--overwrite: retraining: {conflict}", file=sys.stderr)
    return list(runs)


def plan_run(run: SweepRun) -> SweepRun:
    """Fill in ``run``'s effective config (:func:`effective_config`, with its
    :attr:`~vlprompt.runs.SweepRun.settings`) unless a plan already did."""
    if not run.config:
        run.config = effective_config(run.config_file, run.options)
        if run.settings:
            run.config[runs.SETTINGS_KEY] = json_plain(run.settings)
    return run


def run_or_reuse(run: SweepRun, work: Callable[[], dict], overwrite: bool = False) -> tuple[dict, bool]:
    """:func:`vlprompt.runs.run_or_reuse` on ``run``, planned first (:func:`plan_run`)."""
    return runs.run_or_reuse(plan_run(run), work, overwrite)


def run_or_reuse_when_free(run: SweepRun, work: Callable[[], dict], overwrite: bool = False) -> tuple[dict, bool]:
    """:func:`vlprompt.runs.run_or_reuse_when_free` on ``run``, planned first (:func:`plan_run`)."""
    return runs.run_or_reuse_when_free(plan_run(run), work, overwrite)


def run_sweep(jobs: Sequence[tuple], work: Callable[..., dict], overwrite: bool, desc: str,
              label: Callable[..., str], summary: Callable[[dict], str], launch: Any = None,
              references: Sequence[SweepRun] = ()) -> list[tuple[dict, bool]]:
    """A sweep's run loop: every job's run checked first (:func:`plan_runs`), then each run or reused
    (:func:`run_or_reuse`) in turn under a progress bar, writing ``<label>: <summary> (<took>)`` after it;
    with ``launch`` (:class:`~vlprompt.launch.LaunchSettings` of a parallel launcher) the runs go
    through :func:`vlprompt.launch.run_jobs` instead, with the same checks and records.

    A job is a tuple whose last item is its :class:`SweepRun`; ``work(*job)`` trains and tests it and
    ``label(*job)`` names it. Returns ``(result, reused)`` per job, in order. ``references``: the sweep's
    zero-shot reference runs (:func:`zero_shot_run`); a parallel launcher runs them as jobs too, and the tool's
    :func:`zero_shot_reference` then reuses them (sequentially the tool makes them itself, as before).
    """
    from tqdm import tqdm

    plan_runs([job[-1] for job in jobs], overwrite)  # every run checked before the first one trains
    if launch is not None and launch.launcher != "sequential":
        from ..launch import run_jobs

        return run_jobs(jobs, work, overwrite, launch, desc, label, summary, [plan_run(r) for r in references])
    done = []
    with tqdm(jobs, desc=desc, unit="run") as bar:
        for job in bar:
            name = label(*job)
            bar.set_postfix_str(name)
            result, reused = run_or_reuse(job[-1], partial(work, *job), overwrite)
            done.append((result, reused))
            tqdm.write(f"{name}: {summary(result)} ({took(result, reused)})")
    return done


ZERO_SHOT_KEYS = ("model.backbone.", "test_dataloader.", "data_root", "randomness.", "env_cfg.")
"""``--cfg-options`` key prefixes a zero-shot reference shares with the learner's runs: the same CLIP and
test data (training keys mean nothing to zero-shot CLIP, whose configs have no training part)."""


def zero_shot_options(options: Iterable[str]) -> list[str]:
    """The ``key=value`` options of a sweep that apply to its zero-shot reference (:data:`ZERO_SHOT_KEYS`)."""
    return [o for o in options if o.split("=", 1)[0].startswith(ZERO_SHOT_KEYS)]


def zero_shot_reference(run: SweepRun) -> dict:
    """Zero-shot CLIP (``tools/test.py CONFIG none``, :func:`vlprompt.runs.zero_shot_test`) on the test split of
    ``run``'s config with its options, in its folder; returns the run's result (``top1``, ``seconds``, ...). A
    finished run with the same config is reused (a parallel sweep launched it beside its runs:
    ``run_sweep(references=...)``); one with another config is redone (it takes seconds)."""
    result, _ = run_or_reuse_when_free(run, partial(runs.zero_shot_test, run), overwrite=True)  # sweeps share it
    return result


def fewshot_run(method: str, dataset: str, shots: int, seed: int, run_dir: Path, options: list[str],
                epochs: int | None) -> SweepRun:
    """The few-shot run (tools/fewshot.py) of ``method`` on K = ``shots`` shots of every class of
    ``dataset`` with ``seed``, on CoOp's few-shot schedule unless ``epochs`` is given."""
    return SweepRun(run_dir, config_path(method, dataset), [*fewshot_options(dataset, shots, seed, epochs), *options])


def fewshot_options(dataset: str, shots: int, seed: int, epochs: int | None = None) -> list[str]:
    """The options a few-shot sweep gives its run of ``shots`` shots with ``seed`` (not the user's):
    all classes, CoOp's schedule (or ``epochs``), the protocol's name and shot count."""
    epochs = epochs or fewshot_epochs(dataset, shots)
    return [f"randomness.seed={seed}", f"train_dataloader.dataset.num_shots={shots}",
            "train_dataloader.dataset.subsample=all", "test_dataloader.dataset.subsample=all",
            *([f"train_cfg.max_epochs={epochs}"] if epochs else []), "protocol.name=fewshot",
            f"protocol.num_shots={shots}"]
