"""Build an mmengine Runner from a vlprompt config, with the data checked before anything runs."""

from __future__ import annotations

import copy
import inspect
import os
from pathlib import Path
from typing import Any

from mmengine.config import Config
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS, MODELS
from mmengine.runner import Runner

from ..backbones import get_arch
from ..datasets.builder import build_dataset_from_cfg
from ..datasets.checks import check_images, check_loader_settings
from ..errors import ConfigError
from ..registry import find_registered
from . import compat
from .checkpoint import check_source_checkpoint, check_work_dir_run, find_resume_checkpoint, load_learned_into
from .config import load_config  # noqa: F401  (re-exported: vlprompt.engine.runner.load_config)
from .console import ProgressHook, quiet_console
from .hooks import DurableCheckpointHook, LearnerDataHook, NaNGuardHook, PromptCheckpointHook, runner_model

_DATALOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
TUNE_DATALOADER = "tune_dataloader"
"""The split a learner chooses its hyper-parameters on after training (Tip-Adapter's alpha/beta search), built and
checked with the others when the run trains; not mmengine's validation loop."""


@HOOKS.register_module(force=True)
class ClassSetHook(Hook):
    """Points the learner at the class names of whatever it is about to train on or evaluate."""

    priority = "VERY_HIGH"

    @staticmethod
    def _set(runner, loader) -> None:
        model = runner_model(runner)
        names = list(loader.dataset.classnames)
        if names != model.class_names:
            model.set_classes(names)

    def before_train_epoch(self, runner) -> None:  # noqa: D102
        self._set(runner, runner.train_dataloader)

    def before_val_epoch(self, runner) -> None:  # noqa: D102
        self._set(runner, runner.val_dataloader)

    def before_test_epoch(self, runner) -> None:  # noqa: D102
        self._set(runner, runner.test_dataloader)


class PromptRunner(Runner):
    """mmengine's Runner, logging the environment and the config once per work dir and process (a
    training run builds more runners to test base and novel classes), with the device count named
    for what it is, and a quiet console (:mod:`vlprompt.engine.console`): the log file has it all."""

    _env_logged: set[str] = set()

    def build_logger(self, log_level: int | str = "INFO", log_file: str | None = None, **kwargs: Any):  # noqa: D102
        return quiet_console(super().build_logger(log_level, log_file, **kwargs))

    def load_or_resume(self) -> None:
        """``load_from`` a ``learned.safetensors`` or ``epoch_N.pth`` (prompts only, no optimizer state)
        initialises the learner's parameters, checked against the learner and backbone (shapes, floating,
        finite: a source prompt starting a target task, as in MVLPT); resuming goes through mmengine."""
        model = getattr(self.model, "module", self.model)
        if not self._has_loaded and not self._resume and self._load_from is not None \
                and (str(self._load_from).endswith(".safetensors") or hasattr(model, "learner")):
            load_learned_into(self.model, self._load_from)
            self.logger.info(f"learner parameters initialised from {self._load_from}")
            self._has_loaded = True
            return
        super().load_or_resume()

    def _log_env(self, env_cfg: dict) -> None:  # noqa: D102
        if self.work_dir in PromptRunner._env_logged:
            self.logger.info(f"{self.experiment_name}: environment and config as logged above")
            return
        PromptRunner._env_logged.add(self.work_dir)
        import torch
        from mmengine.utils.dl_utils import collect_env

        device = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "CPU only"
        runtime = {**env_cfg, **self._randomness_cfg, "seed": self._seed, "launcher": self._launcher,
                   "processes": self._world_size, "devices": device}
        lines = [f"{k}: {v}" for k, v in collect_env().items()]
        dash = "-" * 60
        self.logger.info(f"\n{dash}\nSystem environment:\n    " + "\n    ".join(lines) +
                         "\n\nRuntime environment:\n    " + "\n    ".join(f"{k}: {v}" for k, v in runtime.items()) +
                         f"\n{dash}\n")
        if self.cfg._cfg_dict:
            self.logger.info(f"Config:\n{self.cfg.pretty_text}")


def with_tensorboard(visualizer: dict | None) -> dict:
    """The visualizer config with mmengine's TensorBoard back-end added (scalars go to
    ``<work_dir>/<timestamp>/vis_data/`` as events beside ``scalars.json``)."""
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
    except ImportError:
        raise ConfigError('tensorboard=True: the tensorboard package is not installed; '
                          'pip install -e ".[tensorboard]"') from None
    from mmengine.visualization import TensorboardVisBackend, Visualizer

    visualizer = dict(visualizer or dict(type=Visualizer, vis_backends=[]))
    backends = list(visualizer.get("vis_backends") or [])
    if not any(b.get("type") in (TensorboardVisBackend, "TensorboardVisBackend") for b in backends):
        backends.append(dict(type=TensorboardVisBackend))
    visualizer["vis_backends"] = backends
    return visualizer


def _accepts(model_type: Any, arg: str) -> bool:
    """Whether the model class takes the constructor argument ``arg`` (``MultitaskModel``'s task ranges)."""
    try:
        return arg in inspect.signature(model_type).parameters
    except (TypeError, ValueError):
        return False


DESCRIPTION_SOURCES = ("knowledge", "descriptions")
"""Learner settings that name a class-description file (:func:`vlprompt.datasets.knowledge.resolve_descriptions`)."""


def iterations_for_shots(train_cfg: Any, train_loader: Any, param_scheduler: Any = None) -> tuple[Any, Any]:
    """``train_cfg`` with ``iters_per_shot`` turned into ``max_iters``: a schedule whose length is a number of
    iterations per shot a class (CLIP-LoRA: 500 x shots), whatever the dataset's size. An iteration-based
    scheduler without an ``end`` then spans the whole run. Fails naming the key when the training set is not
    a few-shot one. Returns the train and scheduler settings."""
    if train_cfg is None or "iters_per_shot" not in train_cfg:
        return train_cfg, param_scheduler
    train_cfg = dict(train_cfg)
    per_shot = train_cfg.pop("iters_per_shot")
    shots = ((train_loader or {}).get("dataset") or {}).get("num_shots")
    if isinstance(per_shot, bool) or not isinstance(per_shot, int) or per_shot < 1:
        raise ValueError(f"train_cfg.iters_per_shot must be a whole number >= 1, got {per_shot!r}")
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"train_cfg.iters_per_shot = {per_shot} needs a few-shot training set, but "
                         f"train_dataloader.dataset.num_shots is {shots!r}")
    if train_cfg.get("by_epoch", True) or "max_epochs" in train_cfg:
        raise ValueError("train_cfg.iters_per_shot sets max_iters: the config needs by_epoch=False and no max_epochs")
    train_cfg["max_iters"] = per_shot * shots
    schedulers = param_scheduler if isinstance(param_scheduler, (list, tuple)) else [param_scheduler]
    spanned = [dict(s, end=train_cfg["max_iters"]) if s is not None and not s.get("by_epoch", True)
               and "end" not in s and "T_max" not in s else s for s in schedulers]
    return train_cfg, spanned if isinstance(param_scheduler, (list, tuple)) else spanned[0]


def build_runner(cfg: Config, launcher: str = "none") -> Runner:
    """A Runner for ``cfg``: datasets are built (and so checked) first, class names come from the
    training (else test) dataset, and the compatibility fixes are in place."""
    compat.apply()
    compat.init_distributed(launcher)
    model_type = cfg.model.get("type")
    if isinstance(model_type, str):
        model_type = find_registered(MODELS, model_type)
    check_config = getattr(model_type, "check_config", None)
    if callable(check_config):
        check_config(cfg)  # a model's own checks of the whole config (DayNightModel), before any data is read
    backbone = cfg.model.get("backbone", {})
    image_size = get_arch(backbone["name"]).image_size if backbone.get("name") else 224
    seed = (cfg.get("randomness") or {}).get("seed")
    resume, load_from = cfg.get("resume", False), cfg.get("load_from")
    if resume and not load_from:
        load_from = find_resume_checkpoint(cfg.work_dir)  # None: nothing to resume, training starts afresh
    if cfg.get("train_dataloader") is not None:  # before any data is read or anything is loaded
        check_work_dir_run(cfg.work_dir, load_from if resume else None, cfg.model, cfg.filename)
        if load_from and not resume:
            check_source_checkpoint(load_from, cfg.model)
    loaders: dict[str, dict | None] = {}
    datasets = {}
    checked: set[str] = set()  # images already opened (val and test often share a split)
    training = cfg.get("train_dataloader") is not None
    for key in (*_DATALOADERS, TUNE_DATALOADER):
        loader = cfg.get(key) if key != TUNE_DATALOADER or training else None
        if loader is None:
            loaders[key] = None
            continue
        loader = copy.deepcopy(loader.to_dict() if hasattr(loader, "to_dict") else dict(loader))
        check_loader_settings(key, loader)  # batch_size=0 would otherwise fail only when testing
        data = loader["dataset"]
        if key == TUNE_DATALOADER:  # the training classes, all their images (no few-shot picks)
            data.setdefault("subsample", cfg.train_dataloader.dataset.get("subsample", "all"))
        data.setdefault("data_root", cfg.get("data_root"))
        data.setdefault("image_size", image_size)
        if data.get("num_shots") or any(isinstance(t, dict) and t.get("num_shots") for t in data.get("tasks") or ()):
            data.setdefault("seed", seed if seed is not None else 1)  # Dassl: one seed for picks and training
        datasets[key] = build_dataset_from_cfg(data)  # fails here, before any step, on bad data
        if key == "train_dataloader":
            # the real shots per class, for results.json (results.run_description); ``short`` as
            # [class, count] pairs, since mmengine cannot dump a dict keyed by "jack-o'-lantern"
            shots = getattr(datasets[key], "shots", None)
            cfg["train_shots"] = shots and {**shots, "short": [[k, v] for k, v in shots["short"].items()]}
        elif loaders.get("train_dataloader") is not None:
            check_images(datasets[key], done=checked)  # an unreadable val/test image stops it now, not after training
        trained = list(datasets["train_dataloader"].classnames) if key == TUNE_DATALOADER else None
        if trained is not None and list(datasets[key].classnames) != trained:
            raise ConfigError(f"{TUNE_DATALOADER}: its classes are not the training classes "
                              f"({len(datasets[key].classnames)} against {len(trained)})")
        loader["dataset"] = datasets[key]
        if loader.get("drop_last") and len(datasets[key]) < loader.get("batch_size", 1):
            loader["drop_last"] = False  # as Dassl: never an empty epoch on a tiny few-shot set
        loaders[key] = loader
    train_cfg, param_scheduler = cfg.get("train_cfg"), cfg.get("param_scheduler")
    if loaders["train_dataloader"]:
        train_cfg, param_scheduler = iterations_for_shots(train_cfg, cfg.get("train_dataloader"), param_scheduler)
    source = datasets.get("train_dataloader") or datasets.get("test_dataloader") or datasets.get("val_dataloader")
    if source is None:
        raise ValueError("the config defines no train_dataloader or test_dataloader")
    model = copy.deepcopy(cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model))
    model["class_names"] = list(source.classnames)
    if getattr(source, "task_ranges", None) is not None and _accepts(model_type, "task_ranges"):
        model.setdefault("task_ranges", [list(r) for r in source.task_ranges])  # a multitask set (MVLPT)
        model.setdefault("task_names", list(source.task_names))
    for key in DESCRIPTION_SOURCES:  # a description file relative to the data root: this run's root
        spec = (model.get("learner") or {}).get(key)
        if isinstance(spec, dict) and spec.get("file") is not None:
            spec.setdefault("data_root", cfg.get("data_root"))

    default_hooks = copy.deepcopy(cfg.get("default_hooks") or {})
    checkpoint_hook = default_hooks.get("checkpoint")
    if checkpoint_hook and checkpoint_hook.get("type") in (CheckpointHook, "CheckpointHook"):
        checkpoint_hook["type"] = DurableCheckpointHook  # the same settings, in an order that loses nothing

    custom_hooks = list(cfg.get("custom_hooks") or [])
    kinds = {h["type"] if isinstance(h["type"], str) else h["type"].__name__ for h in custom_hooks}
    for hook in (ClassSetHook, NaNGuardHook, PromptCheckpointHook, ProgressHook, LearnerDataHook):
        if hook.__name__ not in kinds:
            custom_hooks.append(dict(type=hook))
        if hook is LearnerDataHook:
            next(h for h in custom_hooks if h["type"] in (hook, hook.__name__)).setdefault(
                "tune_dataloader", loaders[TUNE_DATALOADER])
    for hook in custom_hooks:
        if hook["type"] in (PromptCheckpointHook, "PromptCheckpointHook"):
            hook.setdefault("protocol", cfg.get("protocol", {}))

    env_cfg = copy.deepcopy(cfg.get("env_cfg") or {})
    if launcher != "none":
        dist_cfg = env_cfg.setdefault("dist_cfg", {})
        dist_cfg["backend"] = compat.dist_backend(dist_cfg.get("backend"))
        cfg.model_wrapper_cfg = cfg.get("model_wrapper_cfg") or compat.model_wrapper_cfg()

    visualizer = copy.deepcopy(cfg.get("visualizer"))
    if cfg.get("tensorboard"):
        visualizer = with_tensorboard(visualizer)

    os.makedirs(cfg.work_dir, exist_ok=True)
    return PromptRunner(
        model=model,
        work_dir=cfg.work_dir,
        train_dataloader=loaders["train_dataloader"],
        val_dataloader=loaders["val_dataloader"],
        test_dataloader=loaders["test_dataloader"],
        train_cfg=train_cfg if loaders["train_dataloader"] else None,
        val_cfg=cfg.get("val_cfg") if loaders["val_dataloader"] else None,
        test_cfg=(cfg.get("test_cfg") or {}) if loaders["test_dataloader"] else None,
        optim_wrapper=cfg.get("optim_wrapper") if loaders["train_dataloader"] else None,
        param_scheduler=param_scheduler if loaders["train_dataloader"] else None,
        val_evaluator=cfg.get("val_evaluator") if loaders["val_dataloader"] else None,
        test_evaluator=cfg.get("test_evaluator") if loaders["test_dataloader"] else None,
        default_hooks=default_hooks,
        custom_hooks=custom_hooks,
        load_from=load_from,
        resume=resume,
        launcher=launcher,
        env_cfg=env_cfg or dict(dist_cfg=dict(backend="gloo")),
        log_processor=cfg.get("log_processor"),
        log_level=cfg.get("log_level", "INFO"),
        visualizer=visualizer,
        default_scope=cfg.get("default_scope", "mmengine"),
        randomness=cfg.get("randomness", dict(seed=None)),
        experiment_name=cfg.get("experiment_name"),
        cfg=cfg,
    )


def announce_run(runner: Runner) -> None:
    """Print the run's header on the main process: its config, work dir and log file
    (:func:`vlprompt.progress.run_header`), the first thing a quiet console shows of a run."""
    from mmengine.dist import is_main_process

    from ..progress import run_header

    if is_main_process():
        print(run_header(runner.cfg.filename, runner.work_dir, getattr(runner.logger, "log_file", None)), flush=True)


def evaluate(cfg: Config, checkpoint: str | os.PathLike | None, subsample: str | None = None,
             launcher: str = "none", announce: bool = False) -> tuple[dict[str, float], dict]:
    """Test a checkpoint (``None``: nothing learned, e.g. zero-shot CLIP) on ``cfg``'s test split.

    ``subsample`` (base / novel / all) overrides the config's class subset; each subset is its
    own task with its own class names. ``announce``: print the run's header (:func:`announce_run`)
    once the runner is built. Returns the metrics and the model's metadata.
    """
    from .checkpoint import load_learned_into

    cfg = copy.deepcopy(cfg)
    if cfg.get("test_dataloader") is None:
        raise ValueError(f"{cfg.filename} defines no test_dataloader")
    if subsample:
        cfg.test_dataloader.dataset.subsample = subsample
    cfg.train_dataloader = None
    cfg.load_from, cfg.resume = None, False
    cfg.experiment_name = f"{cfg.get('experiment_name') or Path(cfg.filename).stem}_test_{subsample or 'split'}"
    runner = build_runner(cfg, launcher=launcher)
    if announce:
        announce_run(runner)
    if checkpoint is not None:
        load_learned_into(runner.model, checkpoint)
    metrics = runner.test()
    model = runner_model(runner)
    task = subsample or cfg.test_dataloader.dataset.get("subsample", "all")
    top1 = next((v for k, v in metrics.items() if k.endswith("/top1")), None)
    if top1 is not None:  # mmengine's test line does not say which classes it measured
        data = cfg.test_dataloader.dataset
        tasks = data.get("tasks") or []  # a MultitaskDataset names its tasks
        name = data.get("name") if not tasks else " + ".join(t if isinstance(t, str) else t.get("name") for t in tasks)
        runner.logger.info(f"test on the {task} classes of {name} "
                           f"({len(model.class_names)} classes): top-1 {top1:.2f}")
    return metrics, model.metadata()
