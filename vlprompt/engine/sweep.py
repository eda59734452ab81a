"""Pieces shared by the sweep tools: where a method's config is, running one logged step, and the
result file that marks a run as finished (so an interrupted sweep skips what is done).

A finished run records the effective config it was trained with (the config file resolved with
the run's ``--cfg-options``, less :data:`VOLATILE_KEYS`) and its hash. :func:`plan_runs` checks
every run of a sweep before the first one starts: a finished run is reused only when its record
matches what the sweep asks for; otherwise the sweep stops naming the run folder and the keys that
differ, unless ``overwrite`` is given. :func:`run_or_reuse` runs one run under the work dir lock
(:mod:`vlprompt.engine.workdir`) and stores its result with the config.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from mmengine.config import DictAction

from ..io import atomic_write_text, config_hash
from .config import load_config
from .workdir import work_dir_lock

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULT_FILE = "sweep_result.json"
"""Written last in a run's folder, atomically: its presence means the run finished."""


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


VOLATILE_KEYS = ("work_dir", "log_level", "default_hooks.logger")
"""Config keys left out of a run's record: where it lives and how often it logs do not change its result."""
MAX_LISTED = 8
"""How many differing keys (and conflicting runs) a refusal lists before summing up the rest."""


def parse_options(options: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings parsed exactly as tools/train.py's ``--cfg-options`` parses them."""
    namespace = argparse.Namespace()
    for option in options:
        if "=" not in option:
            raise SystemExit(f"--cfg-options: {option!r} is not key=value")
    DictAction(["--cfg-options"], "cfg_options")(argparse.ArgumentParser(), namespace, list(options))
    return namespace.cfg_options


def json_plain(obj: Any) -> Any:
    """``obj`` as JSON values (dicts with string keys, lists, numbers, strings, None); classes and
    functions become their dotted name, anything else its ``repr``."""
    if isinstance(obj, Mapping):
        return {str(k): json_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "__qualname__"):
        return f"{getattr(obj, '__module__', '')}.{obj.__qualname__}"
    return repr(obj)


def effective_config(config: str | Path, options: Sequence[str] = ()) -> dict[str, Any]:
    """The config a run of ``config`` with ``options`` trains with, as plain JSON, less
    :data:`VOLATILE_KEYS`. Only the config file is read: no dataset or model is built."""
    overrides = parse_options(options) or None
    try:
        cfg = load_config(config, None, overrides)
    except Exception as err:  # a bad override or config file: name both
        raise SystemExit(f"cannot load {config} with --cfg-options {' '.join(options) or '(none)'}: {err}") from err
    plain = json_plain(cfg.to_dict())
    for key in VOLATILE_KEYS:
        *parents, leaf = key.split(".")
        node = plain
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    files = input_file_digests(plain)
    if files:
        plain["input_files"] = files
    return json.loads(json.dumps(plain))  # exactly what a JSON round trip gives back


def input_file_digests(plain: Mapping[str, Any]) -> dict[str, str]:
    """``{dotted key: sha256}`` of the ``.safetensors`` files a config names (a GRAM file, a source prompt
    in ``load_from``): a run is reused only while the files it started from are the same, not just their
    paths (re-meta-training rewrites ``gram.safetensors`` in place)."""
    digests = {}
    for key, value in _flatten(dict(plain)).items():
        if not isinstance(value, str) or not value.endswith(".safetensors"):
            continue
        path = Path(value).expanduser()
        path = path if path.is_absolute() else REPO_ROOT / path
        if path.is_file():
            digests[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


_UNSET = object()


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(config, dict) or (prefix and not config):
        return {prefix: config}
    out = {}
    for key, value in config.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return out


def config_differences(recorded: Mapping, wanted: Mapping) -> list[tuple[str, Any, Any]]:
    """``(dotted key, recorded value, wanted value)`` for every leaf that differs (missing: ``<unset>``)."""
    old, new = _flatten(dict(recorded)), _flatten(dict(wanted))
    diffs = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key, _UNSET), new.get(key, _UNSET)
        if a != b:
            diffs.append((key, "<unset>" if a is _UNSET else a, "<unset>" if b is _UNSET else b))
    return diffs


def _show(value: Any) -> str:
    return value if value == "<unset>" else json.dumps(value)


@dataclass
class SweepRun:
    """One run of a sweep: its folder and the config (file and ``key=value`` overrides) it trains with.

    ``legacy_outputs``: files that, all present in a folder without a result file, mark a run
    finished by a vlprompt that did not record configs (transfer.py once kept no result file).
    """

    run_dir: Path
    config_file: Path
    options: list[str]
    legacy_outputs: tuple[str, ...] = ()
    config: dict = field(default_factory=dict, repr=False)
    """The effective config, filled in by :func:`plan_runs`."""

    @property
    def digest(self) -> str:
        """The hash of :attr:`config`."""
        return config_hash(self.config)


def _verdict(run: SweepRun) -> tuple[dict | None, str | None]:
    """``(result to reuse, None)``, ``(None, None)`` to run it, or ``(None, why it conflicts)``."""
    try:
        done = finished_result(run.run_dir)
    except ValueError as err:
        return None, f"{run.run_dir / RESULT_FILE} cannot be read ({err})"
    if done is None:
        if run.legacy_outputs and all((run.run_dir / f).is_file() for f in run.legacy_outputs):
            return None, (f"{run.run_dir} holds the outputs of a finished run ({', '.join(run.legacy_outputs)}) "
                          f"but no {RESULT_FILE} recording the config they came from")
        return None, None
    if not isinstance(done.get("config"), dict):
        return None, (f"{run.run_dir} finished before sweeps recorded their config (its {RESULT_FILE} has none), "
                      "so whether it matches this sweep is unknown")
    if (done.get("config_hash") or config_hash(done["config"])) == run.digest:
        return done, None
    diffs = config_differences(done["config"], run.config)
    if not diffs:
        return None, f"{run.run_dir} records config hash {done.get('config_hash')}, this sweep's is {run.digest}"
    shown = diffs[:MAX_LISTED]
    more = f" (and {len(diffs) - len(shown)} more keys)" if len(diffs) > len(shown) else ""
    if len(shown) == 1:
        key, old, new = shown[0]
        return None, f"{run.run_dir} was run with {key}={_show(old)}, this sweep asks for {_show(new)}{more}"
    return None, (f"{run.run_dir} was run with " + ", ".join(f"{k}={_show(a)}" for k, a, _ in shown)
                  + "; this sweep asks for " + ", ".join(f"{k}={_show(b)}" for k, _, b in shown) + more)


def _refusal(conflicts: Sequence[str], before_training: bool = True) -> SystemExit:
    lines = list(conflicts[:MAX_LISTED])
    if len(conflicts) > len(lines):
        lines.append(f"... and {len(conflicts) - len(lines)} more runs")
    advice = "use --overwrite to retrain it or another --work-root" if len(conflicts) == 1 else \
        "use --overwrite to retrain them or another --work-root"
    return SystemExit("\n".join(lines[:-1] + [f"{lines[-1]}; {advice}"])
                      + ("\n(nothing was trained)" if before_training else ""))


def plan_runs(runs: Sequence[SweepRun], overwrite: bool = False) -> list[SweepRun]:
    """Resolve every run's effective config and check it against the run's record, before any
    training starts. Without ``overwrite``, a finished run that does not match stops the sweep
    (SystemExit naming each such run folder and the differing keys with both values)."""
    conflicts = []
    for run in runs:
        run.config = effective_config(run.config_file, run.options)
        _, conflict = _verdict(run)
        if conflict:
            conflicts.append(conflict)
    if conflicts and not overwrite:
        raise _refusal(conflicts)
    for conflict in conflicts:
        print(f"--overwrite: retraining: {conflict}", file=sys.stderr)
    return list(runs)


def run_or_reuse(run: SweepRun, work: Callable[[], dict], overwrite: bool = False) -> tuple[dict, bool]:
    """The run's stored result if it matches (``(result, True)``), else run ``work()`` under the
    work dir's lock and store what it returns with ``seconds`` and the config (``(result, False)``).

    A matching record is reused without the lock (a read-only work root is fine); otherwise the
    record is checked again under the lock, in case another sweep finished the run meanwhile. With
    ``overwrite`` a conflicting record is removed before ``work()`` retrains the run.
    """
    if not run.config:
        run.config = effective_config(run.config_file, run.options)
    done, _ = _verdict(run)
    if done is not None:
        return done, True
    with work_dir_lock(run.run_dir):
        done, conflict = _verdict(run)
        if done is not None:
            return done, True
        if conflict and not overwrite:
            raise _refusal([conflict], before_training=False)
        (run.run_dir / RESULT_FILE).unlink(missing_ok=True)  # never leave a record of the old run behind
        start = time.perf_counter()
        result = work()
        config_file = Path(run.config_file).resolve()
        result.update(seconds=round(time.perf_counter() - start, 1), config_hash=run.digest,
                      config_file=str(config_file.relative_to(REPO_ROOT) if config_file.is_relative_to(REPO_ROOT)
                                      else config_file), config=run.config)
        return save_result(run.run_dir, result), False


def took(result: Mapping, reused: bool) -> str:
    """``reused`` for a run taken from an earlier sweep, else the time it took (``12 s``)."""
    return "reused" if reused else f"{result.get('seconds', 0):.0f} s"


def run_sweep(jobs: Sequence[tuple], work: Callable[..., dict], overwrite: bool, desc: str,
              label: Callable[..., str], summary: Callable[[dict], str]) -> list[tuple[dict, bool]]:
    """A sweep's run loop: every job's run checked first (:func:`plan_runs`), then each run or reused
    (:func:`run_or_reuse`) in turn under a progress bar, writing ``<label>: <summary> (<took>)`` after it.

    A job is a tuple whose last item is its :class:`SweepRun`; ``work(*job)`` trains and tests it and
    ``label(*job)`` names it. Returns ``(result, reused)`` per job, in order.
    """
    from tqdm import tqdm

    plan_runs([job[-1] for job in jobs], overwrite)  # every run checked before the first one trains
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


def zero_shot_reference(config: str | os.PathLike, run_dir: str | os.PathLike, options: Sequence[str] = ()) -> dict:
    """Zero-shot CLIP (``tools/test.py CONFIG none``) on ``config``'s test split with ``options``, in
    ``run_dir``; returns the run's result (``top1``, ``seconds``, ...). A finished run with the same
    config is reused; one with another config is redone (it takes seconds)."""
    run = SweepRun(Path(run_dir), Path(config), list(options))
    out = run.run_dir.resolve() / "test.json"

    def work() -> dict:
        run_logged([sys.executable, str(REPO_ROOT / "tools" / "test.py"), str(run.config_file), "none",
                    "--work-dir", str(out.parent), "--out", str(out),
                    *(["--cfg-options", *run.options] if run.options else [])],
                   out.parent / "sweep.log")
        return {"method": "zsclip", "top1": read_top1(out)}

    result, _ = run_or_reuse(run, work, overwrite=True)
    return result


def fewshot_run(method: str, dataset: str, shots: int, seed: int, run_dir: Path, options: list[str],
                epochs: int | None) -> SweepRun:
    """The few-shot run (tools/fewshot.py) of ``method`` on K = ``shots`` shots of every class of
    ``dataset`` with ``seed``, on CoOp's few-shot schedule unless ``epochs`` is given."""
    epochs = epochs or fewshot_epochs(dataset, shots)
    opts = [f"randomness.seed={seed}", f"train_dataloader.dataset.num_shots={shots}",
            "train_dataloader.dataset.subsample=all", "test_dataloader.dataset.subsample=all",
            *([f"train_cfg.max_epochs={epochs}"] if epochs else []), "protocol.name=fewshot",
            f"protocol.num_shots={shots}", *options]
    return SweepRun(run_dir, config_path(method, dataset), opts)
