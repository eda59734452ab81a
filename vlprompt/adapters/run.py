"""Test-time adaptation over a test set: the loop behind ``tools/tta.py`` (every registered adapter).

For a config (``adapter=dict(type='tpt'|'rlcf', ...)``, ``views=dict(...)``, a test dataset), the
test split is built as the engine builds it, and the learner is the config's ``model.learner`` on
its backbone (the zero-shot CoOp-style prompt: 4 context tokens from "a photo of a"), or a
checkpoint's trained learner (its own backbone; its class names are replaced by the test set's).
The adapter tunes that learner on each sample's views (seeded per sample) and predicts view 0.

* :func:`run_tta`: every config in turn (each under its work-dir lock), in this process or, with
  ``launcher='pytorch'`` under torchrun, sharded over the processes (rank r takes samples r,
  r + world, ...; the predictions are gathered, and since each sample's views depend only on its
  index and the seed, an episodic adapter's accuracy does not depend on the process count).
  An adapter that keeps state across samples (TDA, DMN, BoostAdapter; ``episodic=False``) sees the
  samples in a shuffle seeded by the config's ``stream.seed`` (recorded in ``results.json``); sharded,
  each rank adapts its own share of that stream.
* :func:`run_one`: one config; writes ``results.json`` to its work dir and returns its table row.
  Each prediction is recorded as it is made (:class:`PredictionLog`, ``tta_predictions.jsonl`` in
  the work dir, with the settings that shape the predictions), so that a run stopped by a kill or a
  full disk goes on from its recorded predictions when the same command is run again (a run under
  other settings is refused, naming them); the log goes once ``results.json`` holds them all.
* :func:`build_run_learner`, :func:`build_adapter_of` (RLCF's teachers built once per process by
  :func:`build_teachers`), :func:`build_views`: the pieces, for tests and other tools.

mmengine (through :mod:`vlprompt.engine`) is imported by the functions that need it, not by this
module's import.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from mmengine.config import Config

    from ..learners import PromptLearner

__all__ = [
    "ADAPTER_STATE_FILE", "AdapterStateSaver", "PREDICTIONS_FILE", "PredictionLog", "build_adapter_of",
    "build_run_learner", "build_teachers", "build_views", "init_distributed", "keeps_state_of", "method_label",
    "pick_device", "recorded_predictions", "run_one", "run_settings", "run_tta", "sample_indices", "stream_order",
    "stream_seed",
]


# ------------------------------------------------------------------------------------------ set-up
def init_distributed(launcher: str) -> tuple[int, int]:
    """(rank, world size); starts the process group under torchrun on every device (this loop has no
    Runner to start it), and needs torchrun's ``RANK``."""
    from ..engine.compat import init_distributed as join_group

    return join_group(launcher, start_on_gpu=True, tool="tools/tta.py")


def pick_device(requested: str | None, launcher: str) -> torch.device:
    """The device of this process: ``requested`` (a :class:`~vlprompt.cli.UsageError` naming it when this
    machine lacks it), else its local GPU, else the CPU."""
    import torch

    if requested:
        from ..cli import device_argument

        return torch.device(device_argument(requested))
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0)) if launcher != "none" else 0
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def sample_indices(size: int, limit: int | None, seed: int) -> list[int]:
    """All of ``range(size)``, or ``limit`` of them drawn with ``seed`` (sorted)."""
    if limit is None or limit >= size:
        return list(range(size))
    import torch

    picked = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:limit]
    return sorted(picked.tolist())


def stream_order(indices: list[int], seed: int) -> list[int]:
    """The order in which an adapter that keeps state across samples sees ``indices``: a shuffle drawn with
    ``seed`` (the config's ``stream.seed``), the same on every machine and process count."""
    import torch

    order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))
    return [indices[i] for i in order.tolist()]


def stream_seed(cfg: Config) -> int:
    """The config's ``stream.seed`` (1 when it has none); anything but an int is a ConfigError naming it."""
    from ..errors import ConfigError

    spec = cfg.get("stream") or {}
    seed = spec.get("seed", 1) if hasattr(spec, "get") else spec
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"{cfg.filename}: stream.seed must be an int (the seed of the stream's order), got {seed!r}")
    return seed


def build_run_learner(cfg: Config, checkpoint: Path | None, class_names: list[str], device: torch.device
                  ) -> tuple[PromptLearner, dict[str, Any]]:
    """The learner the adapter works on, and the model description for ``results.json``."""
    from ..backbones import build_clip
    from ..engine.checkpoint import load_learner
    from ..learners import build_learner as build_registered

    if checkpoint is None:
        backbone = dict(cfg.model.backbone)
        spec = dict(cfg.model.get("learner") or {"type": "coop", "n_ctx": 4, "ctx_init": "a photo of a"})
        learner = build_registered(spec.pop("type"), build_clip(**backbone, device=device), class_names, **spec)
    else:
        learner = load_learner(checkpoint, device=device, class_names=class_names)
        backbone = {"name": learner.backbone.arch, "from": str(checkpoint)}
    model = {"backbone": backbone, "learner": {"type": learner.learner_name, **learner.hparams()},
             "checkpoint": str(checkpoint) if checkpoint else None, "num_classes": len(class_names)}
    return learner, model


_TEACHERS: dict[str, Any] = {}


def build_teachers(spec: Any, device: torch.device) -> Any:
    """The adapter's ``teacher`` with build_clip arguments built once per process, on ``device``."""
    from collections.abc import Mapping

    from ..backbones import build_clip

    if isinstance(spec, (list, tuple)):
        return [build_teachers(s, device) for s in spec]
    if not isinstance(spec, Mapping):
        return spec
    key = repr(sorted(dict(spec).items())) + str(device)
    if key not in _TEACHERS:
        _TEACHERS[key] = build_clip(**dict(spec), device=device)
    return _TEACHERS[key]


def build_adapter_of(cfg: Config, learner: PromptLearner, device: torch.device):
    """The config's adapter on ``learner``; a setting the adapter refuses names the config."""
    from ..errors import ConfigError
    from . import build_adapter

    spec = cfg.get("adapter")
    if not spec or not hasattr(spec, "get"):
        raise ConfigError(f"{cfg.filename}: no adapter=dict(type='tpt'|'rlcf', ...) in the config")
    spec = spec.to_dict() if hasattr(spec, "to_dict") else dict(spec)
    if "teacher" in spec:
        spec["teacher"] = build_teachers(spec["teacher"], device)
    try:
        return build_adapter(spec, learner)
    except (ValueError, TypeError) as err:
        if str(err).startswith(str(cfg.filename)):  # already names the config
            raise
        raise ConfigError(f"{cfg.filename}: adapter={dict(cfg.adapter)}: {err}") from err


def build_views(cfg: Config, learner: PromptLearner, dataset: str):
    """TPT's views at the backbone's size; ``views.augmix=None`` follows TPT's rule for ``dataset``."""
    from ..errors import ConfigError
    from .views import TPT_CROP_SCALE, TPTViews, uses_augmix

    spec = dict(cfg.get("views") or {})
    unknown = sorted(set(spec) - {"n_views", "augmix", "crop_scale"})
    if unknown:
        raise ConfigError(f"{cfg.filename}: views has unknown keys {unknown} (n_views, augmix, crop_scale)")
    augmix = spec.get("augmix")
    augmix = uses_augmix(dataset) if augmix is None else augmix
    try:
        return TPTViews.for_backbone(learner.backbone, n_views=spec.get("n_views", 64), augmix=bool(augmix),
                                     crop_scale=spec.get("crop_scale", TPT_CROP_SCALE))
    except ValueError as err:
        raise ConfigError(f"{cfg.filename}: views={spec}: {err}") from err


def method_label(cfg: Config, model: dict[str, Any]) -> str:
    """``tpt``, ``rlcf-prompt``, ``rlcf-image`` (``+ coop`` from a checkpoint); ``zero-shot`` without steps."""
    adapter = cfg.adapter
    base = "zero-shot" if adapter.get("steps") == 0 else adapter.get("type", "?")
    if base == "rlcf":
        base += "-" + adapter.get("variant", "prompt")
    if model["checkpoint"]:
        base += " + " + model["learner"]["type"]
    return base


# ------------------------------------------------------------------------------- recorded predictions
PREDICTIONS_FILE = "tta_predictions.jsonl"
"""The predictions of an unfinished run, in its work dir (rank r > 0 of a sharded run writes
``tta_predictions.rank<r>.jsonl``)."""

Record = tuple[int, int, int, float, float, float]
"""One sample's ``(index, prediction, label, adapting seconds, view-making seconds, confidence)``; the confidence
is the top class's softmax probability (what ECE and the reliability diagram are computed from)."""


def predictions_path(work_dir: str | os.PathLike, rank: int = 0) -> Path:
    """Where process ``rank`` records its predictions in ``work_dir``."""
    name = PREDICTIONS_FILE if rank == 0 else PREDICTIONS_FILE.replace(".jsonl", f".rank{rank}.jsonl")
    return Path(work_dir) / name


RELIABILITY_FILE = "reliability.png"
"""A finished run's reliability diagram, in its work dir."""
ADAPTER_STATE_FILE = "tta_adapter_state.safetensors"
"""What an adapter that keeps state across samples had learned after the samples recorded so far
(rank r > 0: ``tta_adapter_state.rank<r>.safetensors``), written every :data:`ADAPTER_STATE_EVERY` samples."""
ADAPTER_STATE_EVERY = 16


def adapter_state_path(work_dir: str | os.PathLike, rank: int = 0) -> Path:
    """Where process ``rank`` keeps its adapter's carried state in ``work_dir``."""
    name = ADAPTER_STATE_FILE if rank == 0 else ADAPTER_STATE_FILE.replace(".safetensors", f".rank{rank}.safetensors")
    return Path(work_dir) / name


def run_settings(cfg: Config, checkpoint: Path | None, limit: int | None, items: Iterable[tuple[str, int]],
                 device: torch.device | str = "cpu") -> dict[str, Any]:
    """What shapes a run's predictions: the config (as a run record holds it, with the digests of the files
    it names), the checkpoint's digest, ``--limit``, the test set's images and labels (a digest) and the kind
    of device (a GPU's arithmetic is not the CPU's). The device's number and the process count are not
    settings: a sample's views depend only on its index and the seed."""
    from ..engine.config import plain_config
    from ..io import file_digest

    listing = hashlib.sha256()
    count = 0
    for path, label in items:
        listing.update(f"{path}\t{label}\n".encode())
        count += 1
    return {"config": plain_config(cfg), "checkpoint_sha256": file_digest(checkpoint) if checkpoint else None,
            "limit": limit, "test_set": {"samples": count, "sha256": listing.hexdigest()},
            "device": torch_device_type(device)}


def torch_device_type(device: torch.device | str) -> str:
    """``"cpu"``, ``"cuda"``...: the kind of ``device``."""
    return device.type if hasattr(device, "type") else str(device).split(":")[0]


def _read_log(path: Path) -> tuple[dict | None, dict[int, Record], int]:
    """A prediction log's header (``None``: none, or unreadable), its records by index, and the length of its
    good part: a line cut short by a kill or a full disk, and anything after it, is not read."""
    header, records, good = None, {}, 0
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, {}, 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            entry = json.loads(line)
        except ValueError:
            break
        if header is None:
            if not (isinstance(entry, dict) and isinstance(entry.get("settings"), dict)):
                break
            header = entry
        else:
            try:
                record = (int(entry["i"]), int(entry["p"]), int(entry["y"]), float(entry["adapt_s"]),
                          float(entry["views_s"]), float(entry["c"]))
            except (KeyError, TypeError, ValueError):
                break
            records[record[0]] = record
        good += len(line)
    return header, records, good


def recorded_predictions(work_dir: str | os.PathLike, settings: dict[str, Any]) -> dict[int, Record]:
    """The predictions recorded in ``work_dir`` by earlier, unfinished runs (every process's log), by index.

    A log made under other ``settings`` stops the run (:class:`~vlprompt.errors.ConfigError` naming the file
    and the settings that differ): its predictions and this run's are not to be mixed."""
    from ..engine.config import config_differences, show_value
    from ..errors import ConfigError

    settings = json.loads(json.dumps(settings))
    done: dict[int, Record] = {}
    for path in sorted(Path(work_dir).glob(PREDICTIONS_FILE.replace(".jsonl", "*.jsonl"))):
        header, records, _ = _read_log(path)
        if header is None:
            continue
        diffs = config_differences(header["settings"], settings)
        if diffs:
            listed = ", ".join(f"{k}: {show_value(a)} -> {show_value(b)}" for k, a, b in diffs[:6])
            listed += f" and {len(diffs) - 6} more" if len(diffs) > 6 else ""
            raise ConfigError(f"{path} records {len(records)} predictions made with other settings ({listed}); "
                              "rerun with those settings to finish that run, or remove the file (or use another "
                              "--work-dir) to start this one")
        done.update(records)
    return done


class PredictionLog:
    """An append-only JSON-lines file of a run's predictions: a header with the settings that shape them,
    then one line per sample, flushed as it is written (a kill loses at most the sample being written) and
    synced every :attr:`SYNC_EVERY` samples. A full disk raises :class:`~vlprompt.io.DiskFullError` naming
    the file. Opening an existing log keeps its good part (:func:`_read_log`) and appends after it."""

    SYNC_EVERY = 32

    def __init__(self, path: str | os.PathLike, settings: dict[str, Any], keep: list[Record] | None = None
                 ) -> None:
        """``keep``: start the log afresh with these records only (the rest are made again)."""
        from ..io import atomic_write_text, disk_full_names

        self.path = Path(path)
        self.written = 0
        if keep is not None:
            atomic_write_text(self.path, "".join([json.dumps({"settings": settings}) + "\n",
                                                  *(self._line(r) for r in keep)]))
        header, _, good = _read_log(self.path)
        with disk_full_names(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "r+b" if header is not None else "wb")  # noqa: SIM115 (closed by close())
            try:
                if header is None:
                    self.write_line(json.dumps({"settings": settings}) + "\n")
                else:
                    self._file.truncate(good)
                    self._file.seek(good)
            except BaseException:
                self._file.close()
                raise

    def write_line(self, line: str) -> None:
        """Write one line and hand it to the operating system (it survives this process being killed)."""
        self._file.write(line.encode())
        self._file.flush()

    def append(self, record: Record) -> None:
        """Record one sample's prediction."""
        from ..io import disk_full_names

        with disk_full_names(self.path):
            self.write_line(self._line(record))
            self.written += 1
            if self.written % self.SYNC_EVERY == 0:
                os.fsync(self._file.fileno())

    @staticmethod
    def _line(record: Record) -> str:
        index, pred, label, adapt_s, views_s, confidence = record
        return json.dumps({"i": index, "p": pred, "y": label, "adapt_s": adapt_s, "views_s": views_s,
                           "c": confidence}) + "\n"

    def close(self) -> None:
        """Sync and close the file (what could not be written is not read back: :func:`_read_log`)."""
        from contextlib import suppress

        with suppress(OSError):
            self._file.flush()
            os.fsync(self._file.fileno())
        with suppress(OSError):
            self._file.close()


def keeps_state_of(spec: Any) -> bool:
    """Whether the adapter a config's ``adapter=dict(...)`` builds keeps state across samples (before building it):
    an online adapter (TDA, DMN, BoostAdapter), ``episodic=False`` or a momentum buffer."""
    from ..registry import ADAPTERS

    cls = ADAPTERS.get(spec.get("type")) if isinstance(spec.get("type"), str) else None
    return (getattr(cls, "keeps_state", None) is True or spec.get("episodic") is False
            or spec.get("momentum") is not None)


def _keeps_state(adapter: Any) -> bool:
    """Whether the adapter carries what it learns from one sample to the next (``episodic=False``, a momentum
    buffer): its predictions then depend on the samples before, and a stopped run goes on only from its saved
    state (:class:`AdapterStateSaver`)."""
    keeps = getattr(adapter, "keeps_state", None)
    if isinstance(keeps, bool):
        return keeps
    return not getattr(adapter, "episodic", True) or getattr(adapter, "momentum", None) is not None


def _settings_digest(settings: dict[str, Any], world: int) -> str:
    return hashlib.sha256(json.dumps([settings, world], sort_keys=True, default=str).encode()).hexdigest()


class AdapterStateSaver:
    """Saves a state-keeping adapter's :meth:`carried_state` with the number of this process's samples it has
    seen, every :data:`ADAPTER_STATE_EVERY` samples (atomically: a kill leaves the last whole one), so that a
    stopped run goes on from there; the predictions recorded after it are made again."""

    def __init__(self, path: Path, adapter: Any, digest: str) -> None:
        self.path, self.adapter, self.digest = path, adapter, digest

    def save(self, done: int) -> None:
        from ..backbones import save_safetensors

        save_safetensors(self.adapter.carried_state(), self.path, {"samples": str(done), "settings": self.digest})

    def load(self) -> int:
        """The number of this process's samples the saved state has seen (loaded into the adapter); 0 when there
        is no saved state of these settings, or it does not load (the run then starts over)."""
        from ..backbones import CheckpointError, check_tensor_values, read_safetensors

        if not self.path.is_file():
            return 0
        try:
            tensors, meta = read_safetensors(self.path)
            if meta.get("settings") != self.digest:
                return 0
            check_tensor_values(tensors, self.adapter.carried_state(), self.path)
            done = int(meta.get("samples", ""))
            self.adapter.load_carried_state(tensors)
        except (CheckpointError, ValueError) as err:
            print(f"{self.path}: the adapter's saved state does not load ({err}): starting over", flush=True)
            return 0
        return done

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _resume(cfg: Config, checkpoint: Path | None, limit: int | None, dataset: Any, adapter: Any, mine: list[int],
            rank: int, world: int, device: torch.device, label: str, name: str
            ) -> tuple[list[Record], PredictionLog, AdapterStateSaver | None]:
    """This process's recorded predictions of ``mine`` (an earlier run's, made under the same settings), the
    log the run records the rest in, and (an adapter that keeps state across samples) the saver of its state.
    Such an adapter goes on from its saved state: the predictions it had made by then are kept, later ones are
    made again (their log lines are dropped)."""
    settings = run_settings(cfg, checkpoint, limit, ((item.impath, item.label) for item in dataset.items), device)
    done = recorded_predictions(cfg.work_dir, settings)  # other settings: refused before any sample
    log_path = predictions_path(cfg.work_dir, rank)
    if not _keeps_state(adapter):
        records = [done[i] for i in mine if i in done]
        if records and rank == 0:
            print(f"{label} on {name}: going on from {len(done)} recorded predictions ({log_path})", flush=True)
        return records, PredictionLog(log_path, settings), None
    saver = AdapterStateSaver(adapter_state_path(cfg.work_dir, rank), adapter, _settings_digest(settings, world))
    seen = saver.load() if done else 0
    if seen and not all(i in done for i in mine[:seen]):  # the log lost what the state had seen: start over
        if hasattr(adapter, "restart"):
            adapter.restart()
        seen = 0
    records = [done[i] for i in mine[:seen]]
    if done and rank == 0:
        said = (f"going on from its state after {seen} samples ({saver.path})" if seen else
                f"no saved state of the adapter, which keeps state across samples: the {len(done)} recorded "
                "predictions are made again")
        print(f"{label} on {name}: {said}", flush=True)
    return records, PredictionLog(log_path, settings, keep=records), saver


# ------------------------------------------------------------------------------------------ one run
def run_one(cfg: Config, checkpoint: Path | None, limit: int | None, launcher: str, device: torch.device,
            rank: int, world: int) -> dict[str, Any]:
    """Adapt and predict over ``cfg``'s test set (this rank's share); returns the run's row (rank 0's is
    the gathered one) and writes ``results.json`` on rank 0."""
    import torch
    from tqdm import tqdm

    from ..datasets.builder import build_dataset_from_cfg
    from ..engine.metrics import expected_calibration_error, peak_memory_mb, reliability_diagram
    from ..engine.results import write_results
    from ..errors import hint_on_interrupt
    from ..io import DiskFullError
    from ..progress import bar_disabled

    data = dict(cfg.test_dataloader.dataset)
    data.setdefault("data_root", cfg.get("data_root"))
    data.update(transform=None, progress=False)  # PIL images: the views are made per sample
    dataset = build_dataset_from_cfg(data)
    name = data["name"]
    seed = int((cfg.get("randomness") or {}).get("seed") or 0)
    torch.manual_seed(seed)  # random-weight backbones and teachers come out the same in every process
    if device.type == "cuda":  # this run's peak, not an earlier run's in this process
        torch.cuda.reset_peak_memory_stats(device)
    learner, model = build_run_learner(cfg, checkpoint, list(dataset.classnames), device)
    adapter = build_adapter_of(cfg, learner, device)
    make_views = build_views(cfg, learner, name)
    if adapter.selects_views(make_views.n_views) and int(make_views.n_views * adapter.selection_p) < 1:
        from ..errors import ConfigError

        raise ConfigError(f"{cfg.filename}: views.n_views={make_views.n_views} with adapter.selection_p="
                          f"{adapter.selection_p} selects no view (int({make_views.n_views} x {adapter.selection_p})"
                          " = 0); raise one of them")
    indices = sample_indices(len(dataset), limit, seed)
    label = method_label(cfg, model)
    online = _keeps_state(adapter)
    order_seed = stream_seed(cfg) if online else None
    if online:  # the predictions depend on the samples before: the stream's order is part of the protocol
        indices = stream_order(indices, order_seed)
        if world > 1 and rank == 0:
            print(f"{label} keeps state across samples: each of the {world} processes adapts its own stream (rank r "
                  f"takes samples r, r + {world}, ... of the shuffled stream), so the predictions differ from one "
                  "process's", flush=True)
    mine = indices[rank::world]
    records, log, saver = _resume(cfg, checkpoint, limit, dataset, adapter, mine, rank, world, device, label, name)
    recorded = {r[0] for r in records}
    todo = [i for i in mine if i not in recorded]
    correct = sum(r[1] == r[2] for r in records)
    adapt_s = sum(r[3] for r in records)
    bar = tqdm(todo, desc=f"{label} on {name}", unit="sample", disable=True if rank != 0 else bar_disabled(),
               dynamic_ncols=True, initial=len(records), total=len(mine))
    stopped = f"the predictions made so far are recorded in {log.path}: the same command goes on from there"
    try:
        with hint_on_interrupt(stopped):
            for index in bar:
                item = dataset.items[index]
                start = time.perf_counter()
                views = make_views(dataset.load_image(item.impath),
                                   torch.Generator().manual_seed(seed * 1_000_003 + index))
                made = time.perf_counter()
                logits = adapter(views, index)
                confidence, pred = (float(v) for v in logits.float().softmax(dim=-1)[0].max(dim=-1))
                pred = int(pred)  # the host read ends the sample's device work
                took = time.perf_counter() - made
                record = (index, pred, item.label, took, made - start, confidence)
                log.append(record)
                records.append(record)
                if saver is not None and len(records) % ADAPTER_STATE_EVERY == 0:
                    saver.save(len(records))
                adapt_s += took
                correct += pred == item.label
                bar.set_postfix_str(f"acc {100 * correct / len(records):.1f}%  {adapt_s / len(records):.3f} s/sample")
    except DiskFullError as err:
        where = f"{len(records)} of {len(mine)} samples are recorded in {log.path}, the same command goes on from there"
        raise DiskFullError(err.path, err.errno, f"free some space and rerun: {where}") from err
    finally:
        bar.close()
        log.close()
    records.sort()
    if world > 1:
        import torch.distributed as dist

        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, records)
        records = sorted(r for part in gathered for r in part)
    n = len(records)
    top1 = 100.0 * sum(r[1] == r[2] for r in records) / max(n, 1)
    sec = sum(r[3] for r in records) / max(n, 1)
    confidence = torch.tensor([r[5] for r in records])
    correct = torch.tensor([r[1] == r[2] for r in records])
    ece = expected_calibration_error(confidence, correct) if n else float("nan")
    row = {"method": label, "dataset": name, "config": str(cfg.filename), "samples": n, "of": len(dataset),
           "classes": len(dataset.classnames), "views": make_views.n_views, "top1": top1, "ece": ece,
           "stream_seed": order_seed,
           "sec_per_sample": sec, "peak_memory_mb": peak_memory_mb(device),
           "processes": world, "device": str(device), "work_dir": str(cfg.work_dir)}
    if rank == 0:
        metrics = {"accuracy/top1": top1, "accuracy/ece": ece, "sec_per_sample": sec,
                   "views_sec_per_sample": sum(r[4] for r in records) / max(n, 1)}
        spec = cfg.adapter.to_dict() if hasattr(cfg.adapter, "to_dict") else dict(cfg.adapter)
        try:
            path = write_results(Path(cfg.work_dir) / "results.json", metrics, cfg, model, adapter=spec,
                                 views={"n_views": make_views.n_views, "augmix": make_views.augmix,
                                        "crop_scale": list(make_views.crop_scale)},
                                 samples={"count": n, "of": len(dataset), "limit": limit, "seed": seed},
                                 **({"stream": {"seed": order_seed, "order": indices}} if online else {}),
                                 processes=world, device=str(device),
                                 predictions=[[r[0], r[1]] for r in records],
                                 confidences=[round(r[5], 6) for r in records], row=row)
            reliability_diagram(confidence, correct, Path(cfg.work_dir) / RELIABILITY_FILE,
                                f"{label} on {name}: top-1 {top1:.2f}, ECE {ece:.2f}")
        except DiskFullError as err:
            kept = (f"the {n} predictions are recorded in {predictions_path(cfg.work_dir)}, the same command only "
                    "writes the results")
            raise DiskFullError(err.path, err.errno, f"free some space and rerun: {kept}") from err
        for log_file in Path(cfg.work_dir).glob(PREDICTIONS_FILE.replace(".jsonl", "*.jsonl")):
            log_file.unlink(missing_ok=True)  # results.json holds them all now
        for state_file in Path(cfg.work_dir).glob(ADAPTER_STATE_FILE.replace(".safetensors", "*.safetensors")):
            state_file.unlink(missing_ok=True)
        print(f"{Path(cfg.filename).stem} ({label}): top-1 {top1:.2f} on {n} of {len(dataset)} samples of {name} "
              f"({sec:.3f} s/sample, {make_views.n_views} views; results: {path})", flush=True)
    return row


def run_tta(cfgs: list[Config], checkpoint: Path | None = None, limit: int | None = None, launcher: str = "none",
            device: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """Run every config in turn (each under its work-dir lock); returns the rows and this process's rank."""
    from ..workdir import work_dir_lock

    rank, world = init_distributed(launcher)
    where = pick_device(device, launcher)
    rows = []
    for cfg in cfgs:
        with work_dir_lock(cfg.work_dir, launcher=launcher):
            rows.append(run_one(cfg, checkpoint, limit, launcher, where, rank, world))
    return rows, rank
