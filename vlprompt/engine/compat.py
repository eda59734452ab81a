"""Everything mmengine 0.10 needs to run on current torch, in one place.

* Checkpoints: torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine's own
  checkpoints hold Python objects (``HistoryBuffer``, numpy arrays) that this refuses. vlprompt
  does not lower the guard: :class:`~vlprompt.engine.hooks.PromptCheckpointHook` writes those
  parts as plain data, and :func:`apply` makes mmengine read every local checkpoint with
  ``weights_only=True`` explicitly (whatever the torch version's default).
* CPU multi-process training: mmengine calls ``torch.cuda.set_device`` before it starts the
  process group and hands DDP ``device_ids`` that are only valid for GPUs.
  :func:`init_distributed` starts a gloo group first, and :func:`model_wrapper_cfg` drops the
  device ids on CPU.
"""

from __future__ import annotations

import os
import os.path as osp

import torch
import torch.distributed as dist
from mmengine.runner.checkpoint import CheckpointLoader

_APPLIED = False


def _load_local_weights_only(filename: str, map_location=None):
    """mmengine's local-file loader, reading with ``weights_only=True`` (no code from the file)."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"checkpoint not found: {filename}")
    return torch.load(filename, map_location=map_location, weights_only=True)


def apply() -> None:
    """Install the compatibility fixes (idempotent; every process that loads a checkpoint calls it)."""
    global _APPLIED
    if _APPLIED:
        return
    CheckpointLoader.register_scheme(prefixes="", loader=_load_local_weights_only, force=True)
    _APPLIED = True


def init_distributed(launcher: str) -> None:
    """Start the process group before mmengine does, where mmengine's own start fails (CPU)."""
    if launcher == "none" or dist.is_initialized() or "RANK" not in os.environ:
        return
    if not torch.cuda.is_available():
        dist.init_process_group(backend="gloo")


def dist_backend(requested: str | None = None) -> str:
    """The process-group backend: the requested one on GPU (default nccl), gloo without a GPU."""
    if not torch.cuda.is_available():
        return "gloo"
    return requested or "nccl"


def model_wrapper_cfg() -> dict:
    """DDP settings for the current device: no ``device_ids`` for CPU modules."""
    cfg: dict = dict(type="MMDistributedDataParallel")
    if not torch.cuda.is_available():
        cfg["device_ids"] = None
    return cfg
