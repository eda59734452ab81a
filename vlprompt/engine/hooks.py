"""Runner hooks: checkpoints that load without pickled objects, survive a kill and never hold
diverged parameters, metadata, and a NaN guard."""

from __future__ import annotations

import json
import math
import os
import random
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.dist import barrier, is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import HistoryBuffer
from mmengine.registry import HOOKS

from ..backbones import save_safetensors
from ..io import atomic_write_text, disk_full_names, durable_replace
from .results import open_output_set

LEARNED_FILE = "learned.safetensors"
_BUFFER_TAG = "__history_buffer__"


def runner_model(runner) -> torch.nn.Module:
    """The runner's ``PromptModel``, without its DDP wrapper."""
    return runner.model.module if hasattr(runner.model, "module") else runner.model


def to_plain(obj: Any) -> Any:
    """Containers, numbers, strings and tensors only: what ``torch.load(weights_only=True)`` reads."""
    if isinstance(obj, HistoryBuffer):
        return {_BUFFER_TAG: True, "log": obj._log_history.tolist(), "count": obj._count_history.tolist(),
                "max_length": obj.max_length}
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def from_plain(obj: Any) -> Any:
    """Rebuild the ``HistoryBuffer`` objects :func:`to_plain` flattened."""
    if isinstance(obj, dict):
        if obj.get(_BUFFER_TAG):
            return HistoryBuffer(obj["log"], obj["count"], obj["max_length"])
        return OrderedDict((k, from_plain(v)) for k, v in obj.items())
    return obj


def rng_state() -> dict:
    """The random states that data augmentation draws from, as plain data (saved with checkpoints
    so that a resumed run sees the same crops as an uninterrupted one)."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": to_plain(random.getstate()),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))


@HOOKS.register_module(force=True)
class PromptCheckpointHook(Hook):
    """Makes every checkpoint loadable with ``weights_only=True`` and self-describing.

    Before a checkpoint is written, mmengine's message hub and meta are turned into plain data and
    the model's metadata (backbone, learner and its hyper-parameters, class names) is added under
    ``"vlprompt"``; after loading, the history buffers are rebuilt for resuming. When training ends,
    the learned parameters alone go to ``<work_dir>/learned.safetensors`` with the same metadata:
    the small artifact :func:`vlprompt.load_prompted_clip` reads. Before it is written, the work dir's
    output set is reopened (:func:`vlprompt.engine.results.open_output_set`): ``run.json`` says
    unfinished and the results measured on the learned file being replaced go.
    """

    priority = "VERY_LOW"

    def __init__(self, protocol: dict | None = None) -> None:
        self.protocol = dict(protocol or {})

    def _metadata(self, runner) -> dict:
        model = runner_model(runner)
        return {**model.metadata(), "protocol": self.protocol, "config": getattr(runner.cfg, "filename", None)}

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:  # noqa: D102
        checkpoint["message_hub"] = to_plain(checkpoint["message_hub"])
        checkpoint["meta"] = to_plain(checkpoint["meta"])
        checkpoint["vlprompt"] = to_plain(self._metadata(runner))
        checkpoint["rng"] = rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:  # noqa: D102
        if "message_hub" in checkpoint:
            checkpoint["message_hub"] = from_plain(checkpoint["message_hub"])
        if "rng" in checkpoint and runner._resume:
            set_rng_state(checkpoint["rng"])

    def after_train(self, runner) -> None:  # noqa: D102
        if runner.rank == 0:
            model = runner_model(runner)
            check_finite_parameters(runner, runner.epoch, f"{LEARNED_FILE} is not written")
            meta = {**self._metadata(runner), "epoch": runner.epoch, "iter": runner.iter}
            open_output_set(runner.work_dir, LEARNED_FILE)  # run.json: unfinished; the old learned file's results go
            save_safetensors(model.learner.learned_state_dict(), Path(runner.work_dir) / LEARNED_FILE,
                             {"vlprompt": json.dumps(to_plain(meta))})
        barrier()  # every rank may read the file next (evaluation after training)


@HOOKS.register_module(force=True)
class NaNGuardHook(Hook):
    """Stops training at the first non-finite loss, saying where, instead of training on NaNs."""

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:  # noqa: D102
        if not outputs:
            return
        for name, value in outputs.items():
            value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"{name} became {value} at epoch {runner.epoch + 1}, iteration {batch_idx + 1} "
                    f"(training step {runner.iter + 1}); lower the learning rate or check the data "
                    f"(with --amp, try bf16 or fp32)"
                )


def check_finite_parameters(runner, epoch: int, consequence: str) -> None:
    """Stop, naming the parameter, the epoch and the step, when a learned parameter holds a NaN or
    an infinity (a diverged run: the loss can still look finite at the step that broke it)."""
    model = runner_model(runner)
    learner = getattr(model, "learner", model)
    for name, value in learner.learned_state_dict().items():
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            raise FloatingPointError(
                f"the learned parameter {name} holds {bad} of {value.numel()} non-finite values after epoch "
                f"{epoch} (training step {runner.iter}); {consequence}, the last good checkpoint "
                f"is kept. Lower the learning rate or check the data (with --amp, try bf16 or fp32)"
            )




@HOOKS.register_module(force=True)
class DurableCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` in an order that never loses the last good checkpoint.

    mmengine deletes ``epoch_{N-1}.pth`` before it writes ``epoch_N.pth``, so a kill or a full disk
    in between leaves nothing to resume from. Here the learned parameters are checked for
    non-finite values first (a diverged model is never saved), the new checkpoint is written to a
    temporary name and synced, renamed into place, ``last_checkpoint`` is switched atomically, and
    only then are checkpoints beyond ``max_keep_ckpts`` deleted. A full disk is one line naming the
    checkpoint and the space left (:class:`vlprompt.io.DiskFullError`). Other file back-ends than the
    local disk keep mmengine's behaviour.
    """

    def _save_checkpoint_with_step(self, runner, step, meta):  # noqa: D102
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        epoch = runner.epoch + 1 if self.by_epoch else runner.epoch
        check_finite_parameters(runner, epoch, f"{self.filename_tmpl.format(step)} is not written")
        retired = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            while len(self.keep_ckpt_ids) >= self.max_keep_ckpts:  # a deque with maxlen: make room first
                retired.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))
        name = self.filename_tmpl.format(step)
        final = os.path.join(self.out_dir, name)
        partial = os.path.join(self.out_dir, f".{name}.partial")
        self.last_ckpt = final
        runner.message_hub.update_info("last_ckpt", final)
        try:
            with disk_full_names(final):
                runner.save_checkpoint(self.out_dir, f".{name}.partial", self.file_client_args,
                                       save_optimizer=self.save_optimizer,
                                       save_param_scheduler=self.save_param_scheduler, meta=meta,
                                       by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
                if not is_main_process():
                    return
                durable_replace(partial, final)
        except BaseException:
            if is_main_process() and os.path.exists(partial):
                os.remove(partial)
            raise
        atomic_write_text(os.path.join(runner.work_dir, "last_checkpoint"), final)
        for old in retired:
            path = os.path.join(self.out_dir, self.filename_tmpl.format(old))
            if os.path.isfile(path) and path != final:
                os.remove(path)


class RunDataServer:
    """:class:`vlprompt.learners.base.RunData` over a runner: the training set unshuffled through its training
    pipeline, and the tuning split (``tune_dataloader``) when the config has one."""

    def __init__(self, runner, tune_loader: dict | None) -> None:
        self.runner, self.tune_loader = runner, tune_loader

    def _batches(self, dataset, batch_size: int, num_workers: int):
        from mmengine.dataset import default_collate
        from torch.utils.data import DataLoader

        model = runner_model(self.runner)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=default_collate)
        for batch in loader:
            data = model.data_preprocessor(batch)
            yield data["inputs"], data["data_samples"]

    def train_batches(self):  # noqa: D102
        loader = self.runner.train_dataloader
        return self._batches(loader.dataset, loader.batch_size, loader.num_workers)

    def tune_batches(self):  # noqa: D102
        if self.tune_loader is None:
            return None
        return self._batches(self.tune_loader["dataset"], self.tune_loader.get("batch_size", 100),
                             self.tune_loader.get("num_workers", 0))


@HOOKS.register_module(force=True)
class LearnerDataHook(Hook):
    """Gives the learner the run's data outside its steps (:meth:`~vlprompt.learners.PromptLearner.before_training`,
    ``after_training_epoch``, ``after_training``) and logs what it reports; before the learned file is written."""

    priority = "ABOVE_NORMAL"

    def __init__(self, tune_dataloader: dict | None = None) -> None:
        self.tune_dataloader = tune_dataloader

    def _call(self, runner, what: str) -> None:
        learner = runner_model(runner).learner
        with torch.no_grad():
            report = getattr(learner, what)(RunDataServer(runner, self.tune_dataloader))
        if report:
            runner.logger.info(f"{learner.learner_name} {what.replace('_', ' ')}: "
                               + ", ".join(f"{k} {v}" for k, v in report.items()))

    def before_train(self, runner) -> None:  # noqa: D102
        self._call(runner, "before_training")

    def after_train_epoch(self, runner) -> None:  # noqa: D102
        self._call(runner, "after_training_epoch")

    def after_train(self, runner) -> None:  # noqa: D102
        self._call(runner, "after_training")
