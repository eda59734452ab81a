"""Read what training wrote (learned parameters + metadata) without executing code from the file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..backbones import CheckpointError, build_clip
from ..learners import PromptLearner, build_learner


def read_learned(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The learner's state and the run metadata from ``learned.safetensors`` or an ``epoch_N.pth``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("vlprompt", "{}"))
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        return state, meta
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: refusing or unable to load with weights_only=True: "
                              f"{str(err).splitlines()[0]}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a vlprompt training checkpoint (no state_dict)")
    prefix = "learner."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    return state, ckpt.get("vlprompt", {})


def load_learned_into(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a checkpoint's learned parameters into a built ``PromptModel`` (or a learner)."""
    learner = getattr(model, "module", model)
    learner = getattr(learner, "learner", learner)
    state, _ = read_learned(path)
    expected = set(learner.state_dict())
    if set(state) != expected:
        raise CheckpointError(
            f"{path}: parameters {sorted(state)} do not match the configured learner's {sorted(expected)}"
        )
    learner.load_state_dict(state)


def load_learner(path: str | os.PathLike, device: str | torch.device = "cpu",
                 class_names: list[str] | None = None) -> PromptLearner:
    """Rebuild a trained learner from its checkpoint alone (backbone, hyper-parameters, classes)."""
    state, meta = read_learned(path)
    if not meta.get("learner") or not meta.get("backbone"):
        raise CheckpointError(f"{path}: no vlprompt metadata (backbone, learner) in the checkpoint")
    hparams = dict(meta["learner"])
    name = hparams.pop("type")
    backbone = build_clip(**meta["backbone"], device=device)
    learner = build_learner(name, backbone, class_names or meta["class_names"], **hparams)
    learner.load_state_dict({k: v.to(device) for k, v in state.items()})
    return learner.eval()
