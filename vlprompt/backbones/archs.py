"""The table of CLIP architectures vlprompt can build.

An architecture is an open_clip model config (the JSON configs open_clip ships, or a dict given
here) plus the weights vlprompt knows how to find for it without a download (files that ship
inside the package). Pretrained open_clip tags (``openai``, ``laion2b_s34b_b88k``...) come from
open_clip's own table and are resolved in :mod:`vlprompt.backbones.pretrained`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip

from ..registry import CLIPS

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class ClipArch:
    """One buildable CLIP architecture.

    Attributes:
        name: the name users pass to :func:`vlprompt.backbones.build_clip`.
        open_clip_name: the open_clip config it is based on (also the key of open_clip's
            pretrained-tag table).
        overrides: top-level keys that replace those of the open_clip config (``vision_cfg``,
            ``text_cfg``, ``embed_dim``); a key replaces the whole sub-dict, as in open_clip.
        local_weights: pretrained tags served from files inside the package (no network).
        conv_stem: channels of stride-2 3x3 convolutions that replace the ViT's patch projection
            (one per halving of the patch size; empty keeps open_clip's single projection).
        description: one line for ``list_clips(verbose=True)``.
    """

    name: str
    open_clip_name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    local_weights: dict[str, str] = field(default_factory=dict)
    conv_stem: tuple[int, ...] = ()
    description: str = ""

    def model_config(self) -> dict[str, Any]:
        """The open_clip model config (a fresh copy) with this architecture's overrides."""
        cfg = open_clip.get_model_config(self.open_clip_name)
        if cfg is None:
            raise KeyError(f"open_clip has no model config named {self.open_clip_name!r}")
        cfg = copy.deepcopy(cfg)
        cfg.update(copy.deepcopy(self.overrides))
        cfg.pop("quick_gelu", None)  # the activation travels with the weights, not the arch
        return cfg

    def __call__(self, **kwargs: Any) -> Any:
        """Build this architecture (``build_clip(name, **kwargs)``): a registry entry is its own
        builder, as timm's entry points are."""
        from . import build_clip

        return build_clip(self.name, **kwargs)

    @property
    def image_size(self) -> int:
        size = self.model_config()["vision_cfg"].get("image_size", 224)
        return size if isinstance(size, int) else size[0]

    @property
    def is_vit(self) -> bool:
        vision = self.model_config()["vision_cfg"]
        return not isinstance(vision.get("layers"), (list, tuple)) and "timm_model_name" not in vision


def register_clip(arch: ClipArch, *, overwrite: bool = False) -> ClipArch:
    """Add an architecture to :data:`vlprompt.registry.CLIPS` (the built-in ones and users')."""
    if arch.name in CLIPS.module_dict and not overwrite:
        raise KeyError(f"a CLIP architecture named {arch.name!r} is already registered")
    return CLIPS.register_module(name=arch.name, module=arch, force=True)


def get_arch(name: str) -> ClipArch:
    """Look an architecture up by name, with the list of valid names in the error."""
    try:
        return CLIPS.module_dict[name]
    except (KeyError, TypeError):
        raise KeyError(f"unknown CLIP architecture {name!r}; available: {', '.join(list_clips())}") from None


def list_clips() -> list[str]:
    """Names accepted by :func:`vlprompt.backbones.build_clip`."""
    return sorted(CLIPS.module_dict)


_TEXT_77 = dict(context_length=77, vocab_size=49408)

for _name, _desc in [
    ("ViT-B-16", "ViT-B/16, 224 px, 512-d embedding (the base-to-novel standard)"),
    ("ViT-B-32", "ViT-B/32, 224 px, 512-d embedding"),
    ("ViT-L-14", "ViT-L/14, 224 px, 768-d embedding"),
    ("RN50", "ResNet-50 image tower (text-side prompts only), 1024-d embedding"),
    ("RN101", "ResNet-101 image tower (text-side prompts only), 512-d embedding"),
]:
    register_clip(ClipArch(_name, _name, description=_desc))

register_clip(
    ClipArch(
        "toy",
        "ViT-B-16",
        overrides=dict(
            embed_dim=128,
            vision_cfg=dict(image_size=64, layers=4, width=128, patch_size=8, head_width=32),
            text_cfg=dict(**_TEXT_77, width=128, heads=4, layers=4),
        ),
        local_weights={"toy": "toy_clip.safetensors", "toy-teacher": "toy_teacher.safetensors"},
        conv_stem=(32, 64, 128),
        description="tiny ViT (64 px, conv stem, 4 layers, width 128) pretrained on the generated toy world",
    )
)
register_clip(
    ClipArch(
        "test-tiny",
        "ViT-B-16",
        overrides=dict(
            embed_dim=32,
            vision_cfg=dict(image_size=32, layers=2, width=64, patch_size=8, head_width=32),
            text_cfg=dict(**_TEXT_77, width=64, heads=2, layers=2),
        ),
        description="random-init 2-layer ViT for unit tests (32 px)",
    )
)
