"""Where CLIP weights come from, and the facts that must travel with them.

``pretrained`` may be ``None`` (random init), a tag served from a file inside the package (the toy
CLIP), an open_clip pretrained tag (downloaded into open_clip's cache on a machine with network),
or a path to a weight file. Whatever the source, the result says which activation the weights
were trained with (OpenAI's CLIPs use QuickGELU) and how images must be preprocessed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import open_clip

from .archs import WEIGHTS_DIR, ClipArch
from .checkpoint import CheckpointError, LoadedWeights, read_weights

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class PretrainedUnavailable(RuntimeError):
    """Weights named by a tag could not be fetched (offline machine, unknown tag)."""


@dataclass(frozen=True)
class PreprocessCfg:
    """How images were preprocessed when the weights were trained."""

    image_size: int
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"


@dataclass(frozen=True)
class WeightsInfo:
    """What a backbone was built from: recorded in checkpoints so a run can be rebuilt."""

    arch: str
    pretrained: str | None
    quick_gelu: bool
    preprocess: PreprocessCfg

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> WeightsInfo:
        pre = dict(data["preprocess"])
        pre["mean"], pre["std"] = tuple(pre["mean"]), tuple(pre["std"])
        return cls(data["arch"], data.get("pretrained"), bool(data["quick_gelu"]), PreprocessCfg(**pre))


def default_cache_dir() -> Path:
    """open_clip's default download cache for URL weights (its hub downloads use the HF cache)."""
    return Path(os.environ.get("VLPROMPT_CLIP_CACHE", "~/.cache/clip")).expanduser()


def _parse_bool(value: str | None) -> bool | None:
    return None if value is None else str(value).lower() in ("1", "true", "yes")


def _preprocess_from_metadata(meta: dict[str, str], default: PreprocessCfg) -> PreprocessCfg:
    if "preprocess" not in meta:
        return default
    pre = json.loads(meta["preprocess"])
    return PreprocessCfg(
        image_size=int(pre.get("image_size", default.image_size)),
        mean=tuple(pre.get("mean", default.mean)),
        std=tuple(pre.get("std", default.std)),
        interpolation=pre.get("interpolation", default.interpolation),
        resize_mode=pre.get("resize_mode", default.resize_mode),
    )


def _download_tag(arch: ClipArch, tag: str, cache_dir: str | None) -> tuple[Path, dict]:
    cfg = open_clip.get_pretrained_cfg(arch.open_clip_name, tag)
    if not cfg:
        tags = list(arch.local_weights) + open_clip.list_pretrained_tags_by_model(arch.open_clip_name)
        raise PretrainedUnavailable(
            f"{tag!r} is neither a file nor a known pretrained tag for {arch.name!r}; "
            f"known tags: {', '.join(tags) or 'none'}"
        )
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    hub_cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    try:
        target = open_clip.download_pretrained(cfg, cache_dir=str(cache_dir) if cache_dir else None)
    except Exception as err:  # network, hub or cache errors all mean the same thing to the user
        raise PretrainedUnavailable(
            f"could not fetch pretrained weights {arch.name}/{tag} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}). This machine may be offline. "
            f"open_clip looks for them in its cache ({cache} for URL downloads, {hub_cache} for "
            f"Hugging Face hub downloads). Copy the weight file there on a machine with network, or "
            f"pass its path instead of the tag: build_clip({arch.name!r}, pretrained='/path/to/file.pt')."
        ) from None
    if not target:
        raise PretrainedUnavailable(f"open_clip gave no file for {arch.name}/{tag}")
    return Path(target), cfg


def resolve_pretrained(
    arch: ClipArch,
    pretrained: str | os.PathLike | None,
    *,
    quick_gelu: bool | None = None,
    cache_dir: str | None = None,
) -> tuple[LoadedWeights | None, WeightsInfo]:
    """Find and read the weights ``pretrained`` names, and describe them.

    ``quick_gelu`` overrides what the weights say (needed only for a plain state dict whose
    origin the file does not tell).
    """
    default_pre = PreprocessCfg(image_size=arch.image_size)
    if pretrained is None:
        return None, WeightsInfo(arch.name, None, bool(quick_gelu), default_pre)

    name = str(pretrained)
    tag_cfg: dict = {}
    if name in arch.local_weights:
        path = WEIGHTS_DIR / arch.local_weights[name]
        if not path.is_file():
            raise PretrainedUnavailable(
                f"the packaged weights for {arch.name}/{name} are missing ({path}); "
                f"reinstall vlprompt or rebuild them with tools/pretrain_toy_clip.py"
            )
    elif Path(name).expanduser().exists():
        path = Path(name).expanduser()
    elif os.sep in name or name.endswith((".pt", ".pth", ".bin", ".safetensors")):
        raise CheckpointError(f"weight file not found: {name}")
    else:
        path, tag_cfg = _download_tag(arch, name, cache_dir)

    loaded = read_weights(path)
    meta = loaded.metadata
    if "arch" in meta and meta["arch"] != arch.name:
        raise CheckpointError(f"{path}: weights were saved for architecture {meta['arch']!r}, not {arch.name!r}")
    qg = quick_gelu
    if qg is None:
        qg = tag_cfg.get("quick_gelu", _parse_bool(meta.get("quick_gelu")))
    if tag_cfg:
        pre = PreprocessCfg(
            image_size=arch.image_size,
            mean=tuple(tag_cfg.get("mean", OPENAI_MEAN)),
            std=tuple(tag_cfg.get("std", OPENAI_STD)),
            interpolation=tag_cfg.get("interpolation", "bicubic"),
            resize_mode=tag_cfg.get("resize_mode", "shortest"),
        )
    else:
        pre = _preprocess_from_metadata(meta, default_pre)
    return loaded, WeightsInfo(arch.name, name, bool(qg), pre)
