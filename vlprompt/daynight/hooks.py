"""Runner glue of Similarity Min-Max day-night adaptation (:mod:`vlprompt.daynight`).

* :class:`DayNightModel`: the stage-2 model. It wraps any prompt learner like :class:`PromptModel`
  and trains it on day images and their darkened versions with the similarity term; what it saves
  (``learned.safetensors``, the metadata) is the learner's alone, so ``tools/test.py`` and
  :func:`vlprompt.load_prompted_clip` serve the result unchanged. It checks the whole config before
  any data is read (:meth:`DayNightModel.check_config`, called by :func:`~vlprompt.engine.build_runner`):
  no night split in the training data, exposure ranges inside [0, 1], a given darkening module of
  the configured architecture.
* :class:`DarkeningHook`: stage 1 before stage 2. It loads the darkening module from
  ``model.darkening.path`` or from ``<work_dir>/darkening.safetensors`` when one is there, and
  otherwise trains it on the training images (test transform: no crop, no flip) against the frozen
  CLIP image tower and writes it there (atomically), with ``darkening.json`` (loss history, time).
* :class:`DayNightReportHook`: day and night top-1 and the day/night feature gap of the learner
  before and after training, the stage times, in ``<work_dir>/daynight.json``; and the picture
  ``<work_dir>/darkening_grid.png`` (day images, their darkened versions, real night images).
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.dist import barrier
from mmengine.hooks import Hook
from mmengine.registry import HOOKS, MODELS

from ..backbones import CheckpointError, PromptableCLIP, check_same_weights
from ..datasets import CLIP_MEAN, CLIP_STD, build_dataset
from ..engine.hooks import runner_model
from ..engine.model import PromptModel
from ..errors import ConfigError
from ..io import atomic_write_text
from .darkening import (
    DarkeningNet,
    DarkeningSettings,
    check_exposure_range,
    load_darkening,
    read_darkening_meta,
    save_darkening,
    train_darkening,
)
from .smm import (
    NightViewSettings,
    SimilarityMax,
    colour_jitter,
    darkening_grid,
    mean_pair_cosine,
    mmd_rbf,
    night_view,
    save_png,
)

__all__ = ["DARKENING_FILE", "DEFAULT_DARKENING", "DarkeningHook", "DayNightModel", "DayNightReportHook",
           "is_night_split"]

DARKENING_FILE = "darkening.safetensors"
#: stage-1 settings of ``model.darkening`` (the official defaults; a config lists them all)
DEFAULT_DARKENING: dict[str, Any] = dict(
    path=None, file=DARKENING_FILE, width=64, curve_rounds=8, min_scale=0.95,
    epochs=15, batch_size=16, lr=1e-4, weight_decay=1e-4, grad_clip=0.1, exposure_range=(0.0, 0.5),
    tv_margin=0.02, weights=dict(similarity=0.1, exposure=10.0, colour=25.0, tv=1600.0, flexibility=5.0))
DEFAULT_SIMILARITY: dict[str, Any] = dict(weight=0.1, momentum=0.99, dim=128, representation="auto")
_ARCH_KEYS = ("width", "curve_rounds", "min_scale")


def is_night_split(name: Any, split: Any) -> bool:
    """Whether a dataset spec names night images: a night split (CODaN's ``test_night``), a dataset
    named for the night, or a toy-world dataset rendered in the night style."""
    if "night" in str(split or "").lower() or "night" in str(name or "").lower():
        return True
    try:
        from ..toyworld import toy_spec

        return toy_spec(str(name)).style == "night"
    except ValueError:
        return False


def _pixels(image: torch.Tensor) -> torch.Tensor:
    """A CLIP-normalised ``(3, H, W)`` image back to [0, 1] pixels."""
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    return (image.float() * std + mean).clamp(0, 1)


def _settings(cfg: Mapping[str, Any]) -> DarkeningSettings:
    keys = DarkeningSettings.__dataclass_fields__
    return DarkeningSettings(**{k: copy.deepcopy(v) for k, v in cfg.items() if k in keys})


def check_stage1_record(path: Path, cfg: Mapping[str, Any] | None, backbone: PromptableCLIP | None = None
                        ) -> dict[str, Any]:
    """The stage-1 record a reused darkening module carries (its training settings and the digest of
    the CLIP weights it was trained against), after refusing, naming the file and both values, one
    trained with other stage-1 settings than ``cfg``'s (None: not compared) or on other weights than
    ``backbone``'s (None: not built yet). A module from before vlprompt recorded them is not compared."""
    _, meta = read_darkening_meta(path)
    recorded = meta.get("settings")
    if recorded is not None and not isinstance(recorded, dict):
        raise CheckpointError(f"{path}: darkening metadata key 'settings' = {recorded!r} is not a mapping")
    if recorded is not None and cfg is not None:
        wanted = json.loads(json.dumps(asdict(_settings(cfg))))
        differ = sorted(k for k in set(recorded) | set(wanted) if recorded.get(k) != wanted.get(k))
        if differ:
            shown = ", ".join(f"{k}: {recorded.get(k)!r} -> {wanted.get(k)!r}" for k in differ[:5])
            raise CheckpointError(
                f"{path} was trained by another stage-1 config ({shown}); delete it to train stage 1 again, or "
                "name it in model.darkening.path to use it as it is")
    if backbone is not None:
        check_same_weights(meta.get("backbone_weights"), backbone, path, "trained (stage 1)")
    return {k: meta[k] for k in ("settings", "backbone_weights", "config", "epochs", "images", "seconds") if k in meta}


@MODELS.register_module(force=True)
class DayNightModel(PromptModel):
    """Stage 2 of SMM around a prompt learner (see the module docstring).

    Args:
        backbone, learner, class_names, data_preprocessor: as :class:`PromptModel`.
        darkening: stage-1 settings (:data:`DEFAULT_DARKENING`); ``path`` gives a trained module.
        night_view: how night views are made (:class:`~vlprompt.daynight.NightViewSettings`).
        similarity: ``weight`` (0.1; 0 trains with the darkened views alone), ``momentum`` (0.99),
            ``dim`` (128), ``representation`` (``"auto"``, ``"image"``, ``"scores"``).
    """

    def __init__(self, backbone: dict, learner: dict, class_names: list[str] | None = None,
                 darkening: dict | None = None, night_view: dict | None = None, similarity: dict | None = None,
                 data_preprocessor: dict | None = None) -> None:
        super().__init__(backbone, learner, class_names, data_preprocessor)
        self.darkening_cfg = {**DEFAULT_DARKENING, **dict(darkening or {})}
        self.night_settings = NightViewSettings(**dict(night_view or {}))
        sim = {**DEFAULT_SIMILARITY, **dict(similarity or {})}
        self.similarity = SimilarityMax(self.learner, len(self.class_names), **sim) if sim["weight"] > 0 else None
        self.register_buffer("pixel_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self._darkening: DarkeningNet | None = None

    # ------------------------------------------------------------------ config checks
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Refuse, before any data is read, a config that would train on night images, an exposure
        range outside [0, 1], or a darkening module of another architecture (naming the key or file)."""
        where = getattr(cfg, "filename", None) or "the config"
        train = cfg.get("train_dataloader")
        if train is not None:
            data = train.get("dataset") or {}
            name, split = data.get("name"), data.get("split")
            if is_night_split(name, split) or "night" in str(data.get("folder") or "").lower():
                raise ConfigError(
                    f"{where}: train_dataloader.dataset (name={name!r}, split={split!r}) is a night split; zero-shot "
                    "day-night adaptation trains on day images only (test night images through test_dataloader or "
                    "the DayNightReportHook)")
        model = cfg.get("model") or {}
        darkening = {**DEFAULT_DARKENING, **dict(model.get("darkening") or {})}
        night = {**NightViewSettings().__dict__, **dict(model.get("night_view") or {})}
        for key, value in (("model.darkening.exposure_range", darkening["exposure_range"]),
                           ("model.night_view.exposure_range", night["exposure_range"])):
            try:
                check_exposure_range(value, key)
            except ValueError as err:
                raise ConfigError(f"{where}: {err}") from None
        try:
            _settings(darkening)
            NightViewSettings(**night)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: model.darkening / model.night_view: {err}") from None
        expect = {k: darkening[k] for k in _ARCH_KEYS}
        path = darkening.get("path")
        if path:
            if not Path(path).expanduser().is_file():
                raise ConfigError(f"{where}: model.darkening.path = {path!r}: no such file")
            load_darkening(Path(path).expanduser(), expect)
        elif cfg.get("work_dir") and (Path(cfg.work_dir) / darkening["file"]).is_file():
            load_darkening(Path(cfg.work_dir) / darkening["file"], expect)  # stage 1 would be skipped for it
            check_stage1_record(Path(cfg.work_dir) / darkening["file"], darkening)

    # ------------------------------------------------------------------ darkening
    @property
    def darkening(self) -> DarkeningNet | None:
        return self._darkening

    def set_darkening(self, net: DarkeningNet) -> None:
        """Use ``net`` (frozen) for the night views."""
        object.__setattr__(self, "_darkening", net.to(self.learner.device).eval().requires_grad_(False))

    def to_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Undo the data pipeline's CLIP normalisation: [0, 1] pixels."""
        return (images.float() * self.pixel_std + self.pixel_mean).clamp(0, 1)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.pixel_mean) / self.pixel_std

    # ------------------------------------------------------------------ forward
    def forward(self, inputs: torch.Tensor, data_samples: torch.Tensor | None = None, mode: str = "tensor"):
        if mode != "loss":
            return super().forward(inputs, data_samples, mode)
        return self.loss(inputs, data_samples)

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cross-entropy of the day and the night view, the learner's own terms, the similarity term."""
        if self._darkening is None:
            raise RuntimeError("DayNightModel has no darkening module: DarkeningHook sets it before training "
                               "(stage 1); add dict(type=DarkeningHook) to custom_hooks")
        pixels = self.to_pixels(images)
        night = night_view(self._darkening, pixels, self.night_settings)
        jitter, hue = self.night_settings.jitter, self.night_settings.hue
        day = self.normalize(colour_jitter(pixels, jitter, hue)).to(images.dtype)
        night = self.normalize(colour_jitter(night, jitter, hue)).to(images.dtype)
        learner = self.learner
        both = torch.cat([day, night])
        image_features = learner.encode_images(both)
        class_features = learner.encode_classes(image_features)
        logits = learner.logits(image_features, class_features.to(image_features.dtype))
        b = labels.shape[0]
        losses = {"loss_ce_day": F.cross_entropy(logits[:b], labels),
                  "loss_ce_night": F.cross_entropy(logits[b:], labels)}
        losses.update(learner.extra_losses(both, torch.cat([labels, labels]), image_features, class_features, logits))
        if self.similarity is not None:
            rep = self.similarity.representation_of(image_features, class_features.to(image_features.dtype))
            losses["loss_sim"] = self.similarity.loss(day, night, rep[:b], rep[b:], image_features)
        return losses


# ---------------------------------------------------------------------------------------- stage 1
def _stage1_data(runner, batch_size: int, seed: int | None):
    dataset = runner.train_dataloader.dataset
    if hasattr(dataset, "with_split"):
        dataset = dataset.with_split(dataset.split, transform="test")  # no crop, no flip (Resize as official)
    generator = torch.Generator().manual_seed(int(seed if seed is not None else 0))
    drop_last = len(dataset) >= batch_size
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=drop_last,
                                         num_workers=0, generator=generator)
    return loader, generator


@HOOKS.register_module(force=True)
class DarkeningHook(Hook):
    """Stage 1 of SMM before stage 2: load the darkening module, or train it and save it."""

    priority = "ABOVE_NORMAL"

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress
        self.stage1: dict[str, Any] = {}

    def before_train(self, runner) -> None:  # noqa: D102
        model = runner_model(runner)
        if not isinstance(model, DayNightModel):
            raise TypeError(f"DarkeningHook needs model.type=DayNightModel, got {type(model).__name__}")
        cfg = model.darkening_cfg
        expect = {k: cfg[k] for k in _ARCH_KEYS}
        given = cfg.get("path")
        path = Path(given).expanduser() if given else Path(runner.work_dir) / cfg["file"]
        if path.is_file():
            net = load_darkening(path, expect, model.learner.device)
            # the work dir's own module is reused only if this config would train the same one; a module
            # named in model.darkening.path is the user's choice, but must come from this run's CLIP weights
            record = check_stage1_record(path, None if given else cfg, model.learner.backbone)
            runner.logger.info(f"stage 1 (darkening) skipped: using {path}")
            self.stage1 = {"skipped": True, "path": str(path), **record}
        elif given:
            raise ConfigError(f"model.darkening.path = {given!r}: no such file")
        else:  # one process trains it (the others wait, then read the file)
            if runner.rank == 0:
                net, self.stage1 = self.train_stage1(runner, model, path)
            barrier()
            if runner.rank != 0:
                net, self.stage1 = load_darkening(path, expect, model.learner.device), {"skipped": False,
                                                                                        "path": str(path)}
        model.set_darkening(net)
        runner.message_hub.update_info("daynight_stage1", self.stage1)

    def train_stage1(self, runner, model: DayNightModel, path: Path) -> tuple[DarkeningNet, dict]:
        """Train the darkening module against the frozen CLIP image tower; write it to ``path``."""
        cfg = model.darkening_cfg
        settings = _settings(cfg)
        backbone = model.learner.backbone
        net = DarkeningNet(cfg["width"], cfg["curve_rounds"], cfg["min_scale"]).to(backbone.device)
        loader, generator = _stage1_data(runner, settings.batch_size, runner.seed)

        def batches():
            for batch in loader:
                yield model.to_pixels(batch["img"].to(backbone.device))

        def encode(pixels: torch.Tensor) -> torch.Tensor:
            return backbone.encode_image(model.normalize(pixels), normalize=True)

        runner.logger.info(f"stage 1 (darkening): {settings.epochs} epochs over {len(loader.dataset)} day images, "
                           f"batch {settings.batch_size}")
        result = train_darkening(net, encode, batches, settings, generator=generator, progress=self.progress,
                                 log=runner.logger.info)
        info = {"seconds": result["seconds"], "epochs": settings.epochs, "images": len(loader.dataset),
                "config": getattr(runner.cfg, "filename", None), "final": result["epochs"][-1],
                "settings": json.loads(json.dumps(asdict(settings))), "backbone_weights": backbone.weights_digest}
        save_darkening(net, path, info)
        atomic_write_text(path.with_suffix(".json"), json.dumps({**result, "file": str(path)}, indent=1))
        runner.logger.info(f"stage 1 (darkening) took {result['seconds']:.1f} s; module written to {path}")
        return net.eval().requires_grad_(False), {"skipped": False, "path": str(path), **info}


# ---------------------------------------------------------------------------------------- report
@HOOKS.register_module(force=True)
class DayNightReportHook(Hook):
    """Day and night top-1 and the day/night feature gap before and after training, and the picture.

    Args:
        day, night: ``dict(name=..., split=...)`` of the day and night test sets (same classes).
        paired: the two sets show the same scenes (matched by the image's path inside its dataset):
            report the mean cosine between the features of each scene by day and by night.
        before: also evaluate the learner as it is before training (zero-shot for CoOp from
            "a photo of a").
        picture: columns of ``darkening_grid.png`` (0: none).
        batch_size: evaluation batch size.
        limit: evaluate only this many images of each set, evenly spaced (``None``: all).
    """

    priority = "BELOW_NORMAL"

    def __init__(self, day: dict, night: dict | None = None, paired: bool = False, before: bool = True,
                 picture: int = 8, batch_size: int = 100, limit: int | None = None,
                 file: str = "daynight.json") -> None:
        self.day, self.night = dict(day), (dict(night) if night else None)
        self.paired, self.before, self.picture = paired, before, int(picture)
        self.batch_size, self.limit, self.file = int(batch_size), limit, file
        self._sets: dict[str, Any] | None = None
        self._before: dict | None = None
        self._stage2_start: float | None = None

    def _datasets(self, runner) -> dict[str, Any]:
        if self._sets is None:
            model = runner_model(runner)
            size = model.learner.backbone.image_size
            self._sets = {}
            for key, spec in (("day", self.day), ("night", self.night)):
                if spec:
                    self._sets[key] = build_dataset(**{"subsample": "all", "cache_images": not self.limit, **spec},
                                                    image_size=size, progress=False,
                                                    data_root=runner.cfg.get("data_root"))
        return self._sets

    def _indices(self, dataset) -> list[int]:
        n = len(dataset)
        if not self.limit or self.limit >= n:
            return list(range(n))
        return [i * n // self.limit for i in range(self.limit)]

    @torch.no_grad()
    def _features(self, model, dataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        learner = model.learner
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, self._indices(dataset)),
                                             batch_size=self.batch_size, shuffle=False, num_workers=0)
        feats, logits, labels = [], [], []
        for batch in loader:
            images = batch["img"].to(learner.device)
            f = learner.encode_images(images)
            c = learner.encode_classes(f)
            feats.append(f.float().cpu())
            logits.append(learner.logits(f, c.to(f.dtype)).float().cpu())
            labels.append(batch["label"])
        return torch.cat(feats), torch.cat(logits), torch.cat(labels)

    def evaluate(self, runner) -> dict[str, Any]:
        """Top-1 on each set and the feature gap, with the learner as it is now."""
        model = runner_model(runner)
        learner = model.learner
        was_training, names = learner.training, list(learner.class_names)
        learner.eval()
        out: dict[str, Any] = {}
        feats = {}
        try:
            for key, dataset in self._datasets(runner).items():
                if list(dataset.classnames) != learner.class_names:
                    learner.set_classes(dataset.classnames)
                f, lg, y = self._features(model, dataset)
                feats[key] = (f, [dataset.items[i] for i in self._indices(dataset)], dataset.image_root)
                out[f"{key}/top1"] = round(100.0 * float((lg.argmax(1) == y).float().mean()), 2)
                out[f"{key}/images"] = len(y)
        finally:
            if learner.class_names != names:
                learner.set_classes(names)
            learner.train(was_training)
        if "night" in feats:
            (fd, day_items, day_root), (fn, night_items, night_root) = feats["day"], feats["night"]
            out["gap/mmd_rbf"] = round(mmd_rbf(fd, fn), 6)
            out["gap/mean_cosine_day_night"] = round(mean_pair_cosine(fd.mean(0, keepdim=True),
                                                                     fn.mean(0, keepdim=True)), 6)
            if self.paired:
                index = {os.path.relpath(it.impath, night_root): i for i, it in enumerate(night_items)}
                pairs = [(i, index[os.path.relpath(it.impath, day_root)]) for i, it in enumerate(day_items)
                         if os.path.relpath(it.impath, day_root) in index]
                if pairs:
                    a, b = zip(*pairs, strict=True)
                    out["gap/pair_cosine"] = round(mean_pair_cosine(fd[list(a)], fn[list(b)]), 6)
                    out["gap/pairs"] = len(pairs)
        return out

    def before_train(self, runner) -> None:  # noqa: D102
        if self.before and runner.iter == 0:
            start = time.perf_counter()
            self._before = self.evaluate(runner)
            runner.logger.info(f"before stage 2 ({time.perf_counter() - start:.1f} s): {self._before}")
        self._stage2_start = time.perf_counter()

    def after_train(self, runner) -> None:  # noqa: D102
        stage2 = None if self._stage2_start is None else round(time.perf_counter() - self._stage2_start, 2)
        if runner.rank != 0:
            return
        after = self.evaluate(runner)
        model = runner_model(runner)
        work = Path(runner.work_dir)
        picture = self.write_picture(runner, work / "darkening_grid.png") if self.picture else None
        report = {
            "config": getattr(runner.cfg, "filename", None),
            "learner": model.learner.learner_name,
            "method": "smm" if isinstance(model, DayNightModel) else "day-only",
            "similarity_weight": (model.similarity.weight if getattr(model, "similarity", None) is not None else 0.0)
            if isinstance(model, DayNightModel) else None,
            "before": self._before, "after": after,
            "stage1": runner.message_hub.get_info("daynight_stage1"),
            "stage2_seconds": stage2, "epochs": runner.epoch, "seed": runner.seed,
            "picture": str(picture) if picture else None,
        }
        atomic_write_text(work / self.file, json.dumps(report, indent=1))
        runner.logger.info(f"day/night after training: {after} (report: {work / self.file})")

    @torch.no_grad()
    def write_picture(self, runner, path: Path) -> Path | None:
        """Day test images, their darkened versions (exposure 0.05 and 0.15) and the real night images
        (the same scenes where the sets are paired)."""
        model = runner_model(runner)
        darkening = getattr(model, "darkening", None)
        sets = self._datasets(runner)
        day = sets["day"]
        n = min(self.picture, len(day))
        step = max(1, len(day) // n)
        picks = list(range(0, step * n, step))[:n]
        pixels = torch.stack([_pixels(day[i]["img"]) for i in picks])
        rows = [("day", pixels)]
        if darkening is not None:
            device = next(darkening.parameters()).device
            for e in (0.05, 0.15):
                dark, _, _ = darkening(pixels.to(device), e)
                rows.append((f"darkened\nE = {e}", dark.cpu()))
        night = sets.get("night")
        if night is not None:
            if self.paired:
                index = {os.path.relpath(it.impath, night.image_root): i for i, it in enumerate(night.items)}
                chosen = [index.get(os.path.relpath(day.items[i].impath, day.image_root)) for i in picks]
            else:
                chosen = list(range(0, len(night), max(1, len(night) // n)))[:n]
            imgs = [night[j]["img"] for j in chosen if j is not None]
            if imgs:
                rows.append(("real night" + ("\n(same scenes)" if self.paired else ""),
                             torch.stack([_pixels(im) for im in imgs])))
        return save_png(darkening_grid(rows), path)
