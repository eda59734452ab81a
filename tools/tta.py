"""Test-time adaptation (TPT, RLCF): adapt on each test sample's views, predict it, reset.

    python tools/tta.py configs/tpt/toy_shapes_noise.py --limit 100
    python tools/tta.py configs/rlcf/imagenet_a.py --checkpoint work_dirs/coop/imagenet_xd/learned.safetensors
    python tools/tta.py configs/tpt/toy_shapes_noise.py configs/tpt/toy_shapes_night.py --work-dir work_dirs/tta/tpt
    python tools/tta.py configs/tpt/imagenet.py --datasets imagenet-a imagenet-r imagenet-v2 imagenet-sketch
    torchrun --nproc_per_node 2 tools/tta.py CONFIG --launcher pytorch

For each config (and each of ``--datasets``, which replace the config's test dataset) the test split
is built as the engine builds it, and the learner is the config's ``model.learner`` on its backbone (the zero-shot
CoOp-style prompt: 4 context tokens from "a photo of a"), or ``--checkpoint``'s trained learner (its own backbone;
its class names are replaced by the test set's). The config's ``adapter=dict(type='tpt'|'rlcf',
...)`` then tunes that learner's text context (or, ``variant='image'``, a copy of the image tower)
on each sample's views (``views=dict(n_views=..., augmix=...)``, seeded per sample) and predicts
view 0. ``--cfg-options adapter.steps=0`` predicts without adapting (the zero-shot reference on the
same views and samples).

Writes ``results.json`` (top-1, seconds per sample) to each run's work dir (default
``work_dirs/<method>/<config name>``, with ``_<dataset>`` for ``--datasets``); with several runs,
``--work-dir`` is their root and ``tta.md`` / ``tta.csv`` there (default ``work_dirs/tta/``) tabulate
them. ``--launcher pytorch`` under torchrun shards the test set (rank r takes samples r, r + world,
...) and gathers the predictions; each sample's views depend only on its index and the seed, so
the accuracy does not depend on the process count. ``--limit N`` keeps N samples, drawn with the
config's seed (the same samples for every method).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlprompt.cli import UsageError, add_cfg_options, add_debug_argument, cfg_options, run_tool

if TYPE_CHECKING:  # torch, mmengine and vlprompt.engine are imported after the arguments are parsed
    import torch
    from mmengine.config import Config

    from vlprompt.learners import PromptLearner

TABLE_ROOT = Path("work_dirs/tta")
"""Where the table of several runs goes when no ``--work-dir`` is given."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", metavar="CONFIG", help="configs/tpt/*.py, configs/rlcf/*.py")
    parser.add_argument("--checkpoint", help="a trained learner (work_dirs/.../learned.safetensors) whose text "
                                             "context is adapted (default: zero-shot 'a photo of a')")
    parser.add_argument("--datasets", nargs="+", default=None,
                        help="test on these datasets instead of each config's (one run per config and dataset)")
    parser.add_argument("--work-dir", help="the run's work dir; with several runs, the root of theirs and of the table")
    add_cfg_options(parser)
    parser.add_argument("--limit", type=int, default=None, help="test on N samples of each test set (seeded draw)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available, else cpu)")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0)
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    return args


# ------------------------------------------------------------------------------------------ set-up
def init_distributed(launcher: str) -> tuple[int, int]:
    """(rank, world size); starts the process group under torchrun (gloo without a GPU)."""
    if launcher == "none":
        return 0, 1
    import torch.distributed as dist

    from vlprompt.engine.compat import dist_backend

    if "RANK" not in os.environ:
        raise UsageError("--launcher pytorch: start the tool with torchrun (torchrun --nproc_per_node N "
                         "tools/tta.py CONFIG --launcher pytorch); RANK is not set")
    if not dist.is_initialized():
        dist.init_process_group(backend=dist_backend())
    return dist.get_rank(), dist.get_world_size()


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


def build_learner(cfg: Config, checkpoint: Path | None, class_names: list[str], device: torch.device
                  ) -> tuple[PromptLearner, dict[str, Any]]:
    """The learner the adapter works on, and the model description for ``results.json``."""
    from vlprompt.backbones import build_clip
    from vlprompt.engine.checkpoint import load_learner
    from vlprompt.learners import build_learner as build_registered

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

    from vlprompt.backbones import build_clip

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
    from vlprompt.adapters import build_adapter
    from vlprompt.errors import ConfigError

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
    from vlprompt.adapters.views import TPT_CROP_SCALE, TPTViews, uses_augmix
    from vlprompt.errors import ConfigError

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

    from vlprompt.datasets.builder import build_dataset_from_cfg
    from vlprompt.engine.results import write_results

    data = dict(cfg.test_dataloader.dataset)
    data.setdefault("data_root", cfg.get("data_root"))
    data.update(transform=None, progress=False)  # PIL images: the views are made per sample
    dataset = build_dataset_from_cfg(data)
    name = data["name"]
    seed = int((cfg.get("randomness") or {}).get("seed") or 0)
    torch.manual_seed(seed)  # random-weight backbones and teachers come out the same in every process
    learner, model = build_learner(cfg, checkpoint, list(dataset.classnames), device)
    adapter = build_adapter_of(cfg, learner, device)
    make_views = build_views(cfg, learner, name)
    if adapter.steps and int(make_views.n_views * adapter.selection_p) < 1:
        from vlprompt.errors import ConfigError

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


# ------------------------------------------------------------------------------------------ table
def write_table(rows: list[dict[str, Any]], out_dir: Path) -> tuple[str, dict[str, Path]]:
    """``tta.md`` and ``tta.csv`` in ``out_dir``: one line per run, and the mean top-1 of each method
    over the datasets it ran on (when it ran on more than one)."""
    import csv
    import io
    import statistics

    from vlprompt.engine.results import atomic_write_text

    md = ["| method | dataset | samples | views | top-1 | s/sample |", "|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['method']} | {r['dataset']} | {r['samples']} / {r['of']} | {r['views']} | {r['top1']:.2f} "
                  f"| {r['sec_per_sample']:.3f} |")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        if len({r["dataset"] for r in mine}) > 1:
            top1 = statistics.fmean(r["top1"] for r in mine)
            sec = statistics.fmean(r["sec_per_sample"] for r in mine)
            md.append(f"| **{m}** | **average** ({len(mine)}) | | | **{top1:.2f}** | {sec:.3f} |")
    text = "\n".join(md) + "\n"
    buf = io.StringIO()
    writer = csv.writer(buf)
    keys = ["method", "dataset", "samples", "of", "classes", "views", "top1", "sec_per_sample", "processes", "device",
            "config", "work_dir"]
    writer.writerow(keys)
    for r in rows:
        writer.writerow([f"{r[k]:.4f}" if isinstance(r[k], float) else r[k] for k in keys])
    files = {"md": atomic_write_text(out_dir / "tta.md", text), "csv": atomic_write_text(out_dir / "tta.csv",
                                                                                         buf.getvalue())}
    return text, files


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    from vlprompt.backbones.checkpoint import CheckpointError
    from vlprompt.engine import load_config
    from vlprompt.engine.config import default_work_dir
    from vlprompt.engine.workdir import work_dir_lock

    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    if checkpoint is not None and not checkpoint.is_file():
        what = "is a folder, not a file" if checkpoint.is_dir() else "does not exist"
        raise CheckpointError(f"--checkpoint {checkpoint} {what} (give a learned.safetensors or epoch_N.pth from a "
                              "work dir, or leave it out for the zero-shot prompt)")
    options = cfg_options(args.cfg_options)
    jobs = [(c, d) for c in args.configs for d in (args.datasets or [None])]
    several = len(jobs) > 1
    cfgs = []
    for config, dataset in jobs:  # every config is read and checked before the first run starts
        cfg = load_config(config, None, options)
        if dataset is not None:
            cfg.test_dataloader.dataset.name = dataset
        run_dir = default_work_dir(config) + (f"_{dataset.replace('-', '_')}" if dataset else "")
        if several:
            cfg.work_dir = str(Path(args.work_dir) / Path(run_dir).name) if args.work_dir else run_dir
        else:
            cfg.work_dir = args.work_dir or cfg.get("work_dir") or run_dir
        cfgs.append(cfg)
    rank, world = init_distributed(args.launcher)
    device = pick_device(args.device, args.launcher)
    rows = []
    for cfg in cfgs:
        with work_dir_lock(cfg.work_dir, launcher=args.launcher):
            rows.append(run_one(cfg, checkpoint, args.limit, args.launcher, device, rank, world))
    if several and rank == 0:
        text, files = write_table(rows, Path(args.work_dir) if args.work_dir else TABLE_ROOT)
        print("\n" + text + f"\ntables: {files['md']}, {files['csv']}")
    return rows


if __name__ == "__main__":
    run_tool(main)
