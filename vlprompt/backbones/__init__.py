"""The CLIP backbone registry: build a frozen, promptable CLIP by name.

>>> from vlprompt.backbones import build_clip
>>> clip = build_clip("ViT-B-16", pretrained="openai")           # open_clip tag (needs network once)
>>> clip = build_clip("ViT-B-16", pretrained="~/ViT-B-16.pt")     # OpenAI TorchScript file
>>> clip = build_clip("toy", pretrained="toy")                    # ships with vlprompt
"""

from __future__ import annotations

import logging
import os

import open_clip
import torch

from .archs import ClipArch, get_arch, list_clips, register_clip
from .checkpoint import (
    CheckpointError,
    check_same_weights,
    check_state_dict,
    check_tensor_values,
    check_tensors_fit,
    read_safetensors,
    read_weights,
    save_safetensors,
    state_digest,
)
from .pretrained import (
    ActivationUnknownWarning,
    PreprocessCfg,
    PretrainedUnavailable,
    WeightsInfo,
    resolve_pretrained,
)
from .promptable import PromptableCLIP, TokenLayout, token_layout
from .prompts import ImagePrompts, LowRankUpdate, TextPrompts, TokenInsertion
from .stem import ConvStem, install_conv_stem
from .tokenizer import ContextOverflowError, PromptTokenizer

__all__ = [
    "ActivationUnknownWarning",
    "CheckpointError",
    "ClipArch",
    "ContextOverflowError",
    "ConvStem",
    "ImagePrompts",
    "LowRankUpdate",
    "PreprocessCfg",
    "PretrainedUnavailable",
    "PromptTokenizer",
    "PromptableCLIP",
    "TextPrompts",
    "TokenInsertion",
    "TokenLayout",
    "WeightsInfo",
    "build_clip",
    "check_same_weights",
    "check_tensor_values",
    "check_tensors_fit",
    "build_open_clip_model",
    "install_conv_stem",
    "get_arch",
    "list_clips",
    "read_safetensors",
    "read_weights",
    "register_clip",
    "save_safetensors",
    "state_digest",
    "token_layout",
]


def build_open_clip_model(name: str, quick_gelu: bool = False) -> open_clip.CLIP:
    """The plain open_clip ``CLIP`` module of an architecture, randomly initialised."""
    arch = get_arch(name)
    # open_clip logs its random-init warning only from create_model; the class itself is quiet.
    model = open_clip.CLIP(**arch.model_config(), quick_gelu=quick_gelu)
    if arch.conv_stem:
        install_conv_stem(model.visual, arch.conv_stem)
    return model


def build_clip(
    name: str,
    pretrained: str | os.PathLike | None = None,
    *,
    quick_gelu: bool | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | None = None,
    text_checkpointing: bool = False,
    vision_checkpointing: bool = False,
) -> PromptableCLIP:
    """Build a frozen, promptable CLIP.

    Args:
        name: an architecture from :func:`list_clips` (``ViT-B-16``, ``RN50``, ``toy``...).
        pretrained: ``None`` for random weights; a packaged tag (``"toy"``); an open_clip tag
            (``"openai"``, ``"laion2b_s34b_b88k"``...), fetched into open_clip's cache; or a path
            to an OpenAI TorchScript archive, a state dict, an open_clip checkpoint or a
            ``.safetensors`` file. Files are read without executing anything in them.
        quick_gelu: force the activation; by default it follows the weights (OpenAI's CLIPs
            were trained with QuickGELU, open_clip's LAION weights with GELU). A plain state dict
            that does not record it loads with GELU and an :class:`ActivationUnknownWarning`.
        device: where the model lives.
        dtype: weight precision (``torch.float32``; ``bfloat16``/``float16`` for inference).
        cache_dir: download cache for open_clip tags.
        text_checkpointing: activation checkpointing of the text blocks when prompts need
            gradients (:attr:`PromptableCLIP.text_checkpointing`): the memory of a step over
            thousands of class prompts (multitask training) for one more forward pass of the text tower.
        vision_checkpointing: the same for the ViT blocks when image prompts need gradients
            (deep visual prompts: the image tower's activations of a whole batch).
    """
    arch = get_arch(name)
    loaded, info = resolve_pretrained(arch, pretrained, quick_gelu=quick_gelu, cache_dir=cache_dir)
    model = build_open_clip_model(name, quick_gelu=info.quick_gelu)
    if loaded is not None:
        source = loaded.path or pretrained
        # checked before any cast: keys, shapes, dtypes and finite values of the tensors as stored
        check_state_dict(model, loaded.state_dict, source, name)
        state = {k: v.float() if v.is_floating_point() else v for k, v in loaded.state_dict.items()}
        model.load_state_dict(state, strict=True)
        logging.getLogger("vlprompt").info(
            "loaded %s weights for %s from %s (quick_gelu=%s)", loaded.source_format, name, pretrained,
            info.quick_gelu,
        )
    # the weights' identity as loaded (float32), before a cast to a lower precision changes their values
    digest = state_digest(model.state_dict()) if loaded is not None and dtype != torch.float32 else None
    model = model.to(device=device, dtype=dtype)
    return PromptableCLIP(model, info, text_checkpointing=text_checkpointing,
                          vision_checkpointing=vision_checkpointing, weights_digest=digest)
