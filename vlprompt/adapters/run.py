"""Test-time adaptation over a test set: the loop behind ``tools/tta.py`` (TPT, RLCF).

For a config (``adapter=dict(type='tpt'|'rlcf', ...)``, ``views=dict(...)``, a test dataset), the
test split is built as the engine builds it, and the learner is the config's ``model.learner`` on
its backbone (the zero-shot CoOp-style prompt: 4 context tokens from "a photo of a"), or a
checkpoint's trained learner (its own backbone; its class names are replaced by the test set's).
The adapter tunes that learner on each sample's views (seeded per sample) and predicts view 0.

* :func:`run_tta`: every config in turn (each under its work-dir lock), in this process or, with
  ``launcher='pytorch'`` under torchrun, sharded over the processes (rank r takes samples r,
  r + world, ...; the predictions are gathered, and since each sample's views depend only on its
  index and the seed, the accuracy does not depend on the process count).
* :func:`run_one`: one config; writes ``results.json`` to its work dir and returns its table row.
* :func:`build_run_learner`, :func:`build_adapter_of` (RLCF's teachers built once per process by
  :func:`build_teachers`), :func:`build_views`: the pieces, for tests and other tools.

mmengine (through :mod:`vlprompt.engine`) is imported by the functions that need it, not by this
module's import.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from mmengine.config import Config

    from ..learners import PromptLearner

__all__ = ["build_adapter_of", "build_run_learner", "build_teachers", "build_views", "init_distributed",
           "method_label", "pick_device", "run_one", "run_tta", "sample_indices"]


# ------------------------------------------------------------------------------------------ set-up
def init_distributed(launcher: str) -> tuple[int, int]:
    """(rank, world size); starts the process group under torchrun on every device (this loop has no
    Runner to start it), and needs torchrun's ``RANK``."""
    from ..engine.compat import init_distributed as join_group

    return join_group(launcher, start_on_gpu=True, tool="tools/tta.py")


def pick_device(requested: str | None, launcher: str) -> torch.device:
    """The device of this process: ``requested``, else its local GPU, else the CPU."""
    import torch

    if requested:
        return torch.device(requested)
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


# ------------------------------------------------------------------------------------------ one run
def run_one(cfg: Config, checkpoint: Path | None, limit: int | None, launcher: str, device: torch.device,
            rank: int, world: int) -> dict[str, Any]:
    """Adapt and predict over ``cfg``'s test set (this rank's share); returns the run's row (rank 0's is
    the gathered one) and writes ``results.json`` on rank 0."""
    import torch
    from tqdm import tqdm

    from ..datasets.builder import build_dataset_from_cfg
    from ..engine.results import write_results

    data = dict(cfg.test_dataloader.dataset)
    data.setdefault("data_root", cfg.get("data_root"))
    data.update(transform=None, progress=False)  # PIL images: the views are made per sample
    dataset = build_dataset_from_cfg(data)
    name = data["name"]
    seed = int((cfg.get("randomness") or {}).get("seed") or 0)
    torch.manual_seed(seed)  # random-weight backbones and teachers come out the same in every process
    learner, model = build_run_learner(cfg, checkpoint, list(dataset.classnames), device)
    adapter = build_adapter_of(cfg, learner, device)
    make_views = build_views(cfg, learner, name)
    if adapter.steps and int(make_views.n_views * adapter.selection_p) < 1:
        from ..errors import ConfigError

        raise ConfigError(f"{cfg.filename}: views.n_views={make_views.n_views} with adapter.selection_p="
                          f"{adapter.selection_p} selects no view (int({make_views.n_views} x {adapter.selection_p})"
                          " = 0); raise one of them")
    indices = sample_indices(len(dataset), limit, seed)
    mine = indices[rank::world]
    label = method_label(cfg, model)
    records = []
    correct = adapt_s = views_s = 0.0
    bar = tqdm(mine, desc=f"{label} on {name}", unit="sample", disable=rank != 0, dynamic_ncols=True)
    for done, index in enumerate(bar, 1):
        item = dataset.items[index]
        start = time.perf_counter()
        views = make_views(dataset.load_image(item.impath), torch.Generator().manual_seed(seed * 1_000_003 + index))
        made = time.perf_counter()
        logits = adapter(views, index)
        pred = int(logits.argmax(dim=-1)[0])  # the host read ends the sample's device work
        took = time.perf_counter() - made
        views_s += made - start
        adapt_s += took
        correct += pred == item.label
        records.append((index, pred, item.label, took, made - start))
        bar.set_postfix_str(f"acc {100 * correct / done:.1f}%  {adapt_s / done:.3f} s/sample")
    bar.close()
    if world > 1:
        import torch.distributed as dist

        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, records)
        records = sorted(r for part in gathered for r in part)
    n = len(records)
    top1 = 100.0 * sum(p == y for _, p, y, _, _ in records) / max(n, 1)
    sec = sum(r[3] for r in records) / max(n, 1)
    row = {"method": label, "dataset": name, "config": str(cfg.filename), "samples": n, "of": len(dataset),
           "classes": len(dataset.classnames), "views": make_views.n_views, "top1": top1, "sec_per_sample": sec,
           "processes": world, "device": str(device), "work_dir": str(cfg.work_dir)}
    if rank == 0:
        metrics = {"accuracy/top1": top1, "sec_per_sample": sec,
                   "views_sec_per_sample": sum(r[4] for r in records) / max(n, 1)}
        spec = cfg.adapter.to_dict() if hasattr(cfg.adapter, "to_dict") else dict(cfg.adapter)
        path = write_results(Path(cfg.work_dir) / "results.json", metrics, cfg, model, adapter=spec,
                             views={"n_views": make_views.n_views, "augmix": make_views.augmix,
                                    "crop_scale": list(make_views.crop_scale)},
                             samples={"count": n, "of": len(dataset), "limit": limit, "seed": seed},
                             processes=world, device=str(device),
                             predictions=[[i, p] for i, p, *_ in records])
        print(f"{Path(cfg.filename).stem} ({label}): top-1 {top1:.2f} on {n} of {len(dataset)} samples of {name} "
              f"({sec:.3f} s/sample, {make_views.n_views} views; results: {path})", flush=True)
    return row


def run_tta(cfgs: list[Config], checkpoint: Path | None = None, limit: int | None = None, launcher: str = "none",
            device: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """Run every config in turn (each under its work-dir lock); returns the rows and this process's rank."""
    from ..engine.workdir import work_dir_lock

    rank, world = init_distributed(launcher)
    where = pick_device(device, launcher)
    rows = []
    for cfg in cfgs:
        with work_dir_lock(cfg.work_dir, launcher=launcher):
            rows.append(run_one(cfg, checkpoint, limit, launcher, where, rank, world))
    return rows, rank
