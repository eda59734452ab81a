"""Everything mmengine 0.10 needs to run on current torch, in one place.

* Checkpoints: torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine's own
  checkpoints hold Python objects (``HistoryBuffer``, numpy arrays) that this refuses. vlprompt
  does not lower the guard: :class:`~vlprompt.engine.hooks.PromptCheckpointHook` writes those
  parts as plain data, and :func:`apply` replaces every loader of mmengine's ``CheckpointLoader``
  (``load_from``, ``--resume``): local files and ``http(s)://``/``s3://`` bytes are read with
  ``weights_only=True`` passed explicitly (so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot lower
  it), and the model-zoo schemes (``open-mmlab://``, ``torchvision://``, ``pavi://``...), whose
  loaders would call ``torch.load`` on their own, are refused.
* CPU multi-process training: mmengine calls ``torch.cuda.set_device`` before it starts the
  process group and hands DDP ``device_ids`` that are only valid for GPUs.
  :func:`init_distributed` starts a gloo group first, and :func:`model_wrapper_cfg` drops the
  device ids on CPU.
"""

from __future__ import annotations

import io
import os
import os.path as osp

import torch
import torch.distributed as dist
from mmengine.runner.checkpoint import CheckpointLoader

from ..backbones import CheckpointError
from .checkpoint import torch_load_plain

_APPLIED = False
#: schemes whose bytes vlprompt fetches through mmengine's file backends, then reads safely
REMOTE_SCHEMES = ("https://", "http://", r"(\S+\:)?s3://", r"(\S+\:)?petrel://")


def _load_local_weights_only(filename: str, map_location=None):
    """mmengine's local-file loader, reading with ``weights_only=True`` (no code from the file)."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise CheckpointError(f"checkpoint not found: {filename}")
    return torch_load_plain(filename, filename, map_location)


def _load_remote_weights_only(filename: str, map_location=None):
    """The file's bytes through mmengine's backend for its scheme, read with ``weights_only=True``."""
    from mmengine.fileio import get

    return torch_load_plain(io.BytesIO(get(filename)), filename, map_location)


def _refuse_scheme(filename: str, map_location=None):
    raise CheckpointError(
        f"{filename}: vlprompt does not load model-zoo schemes (their loaders unpickle without "
        f"weights_only=True); download the file and give its local path"
    )


def apply() -> None:
    """Install the compatibility fixes (idempotent; every process that loads a checkpoint calls it)."""
    global _APPLIED
    if _APPLIED:
        return
    for prefix in list(CheckpointLoader._schemes):
        loader = (_load_local_weights_only if prefix == "" else
                  _load_remote_weights_only if prefix in REMOTE_SCHEMES else _refuse_scheme)
        CheckpointLoader.register_scheme(prefixes=prefix, loader=loader, force=True)
    _APPLIED = True


def init_distributed(launcher: str, *, start_on_gpu: bool = False, tool: str | None = None) -> tuple[int, int]:
    """(rank, world size) of this process, ``(0, 1)`` without a launcher; joins the launcher's group.

    Without a GPU the process group is started here with gloo (mmengine's own start fails on CPU);
    with one, only when ``start_on_gpu`` (nccl; a Runner otherwise starts its own). ``tool`` names
    the script for the message when a launcher is asked for but ``RANK`` is not set (a
    :class:`~vlprompt.cli.UsageError`); without it that case is left to the Runner.
    """
    if launcher == "none":
        return 0, 1
    if "RANK" not in os.environ:
        if tool is None:
            return 0, 1
        from ..cli import UsageError

        raise UsageError(f"--launcher {launcher}: start the tool with torchrun (torchrun --nproc_per_node N "
                         f"{tool} CONFIG --launcher {launcher}); RANK is not set")
    if not dist.is_initialized() and (start_on_gpu or not torch.cuda.is_available()):
        dist.init_process_group(backend=dist_backend())
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ["RANK"]), int(os.environ.get("WORLD_SIZE", 1))


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
