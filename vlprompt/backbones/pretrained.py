"""Where CLIP weights come from, and the facts that must travel with them.

``pretrained`` may be ``None`` (random init), a tag served from a file inside the package (the toy
CLIP), an open_clip pretrained tag (downloaded into open_clip's cache on a machine with network),
or a path to a weight file. Whatever the source, the result says which activation the weights
were trained with (OpenAI's CLIPs use QuickGELU) and how images must be preprocessed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import urllib.parse
import urllib.request
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import open_clip
import torch

from ..errors import UserError
from .archs import WEIGHTS_DIR, ClipArch
from .checkpoint import CheckpointError, LoadedWeights, max_weight_bytes, read_weights
from .stem import install_conv_stem

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class PretrainedUnavailable(UserError, RuntimeError):
    """Weights named by a tag could not be fetched (offline machine, unknown tag)."""


class ActivationUnknownWarning(UserWarning):
    """A weight file does not say whether it was trained with QuickGELU; GELU is assumed."""


# The values open_clip's image_transform accepts.
INTERPOLATIONS = ("bicubic", "bilinear", "random")
RESIZE_MODES = ("shortest", "longest", "squash")
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


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


def arch_num_elements(arch: ClipArch) -> int:
    """How many tensor elements the architecture's state dict holds (counted on the meta device: no memory)."""
    with torch.device("meta"):
        model = open_clip.CLIP(**arch.model_config())
        if arch.conv_stem:
            install_conv_stem(model.visual, arch.conv_stem)
    return sum(t.numel() for t in model.state_dict().values())


def _parse_bool(value: object, path: str | os.PathLike = "", key: str = "quick_gelu") -> bool | None:
    """A boolean-like metadata value (``true/false/1/0/yes/no``), None when absent; anything else is refused."""
    if value is None or isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise CheckpointError(
        f"{path}: metadata {key!r} is {value!r:.80}, not a boolean (expected one of {', '.join(_TRUE + _FALSE)})"
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _preprocess_from_metadata(
    meta: dict[str, str], default: PreprocessCfg, path: str | os.PathLike = ""
) -> PreprocessCfg:
    """The preprocessing a file records in its ``preprocess`` metadata (a JSON object), checked value by value."""
    if "preprocess" not in meta:
        return default
    raw = meta["preprocess"]
    try:
        pre = json.loads(raw)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: metadata 'preprocess' is not valid JSON ({err}): {raw!r:.80}") from None
    if not isinstance(pre, dict):
        raise CheckpointError(f"{path}: metadata 'preprocess' is a JSON {type(pre).__name__}, not an object")

    def bad(key: str, value: object, why: str) -> CheckpointError:
        return CheckpointError(f"{path}: metadata 'preprocess' key {key!r} is {value!r:.80}: {why}")

    size = pre.get("image_size", default.image_size)
    if isinstance(size, float) and size.is_integer():
        size = int(size)
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise bad("image_size", size, "expected a positive integer")
    stats = {}
    for key in ("mean", "std"):
        value = pre.get(key, getattr(default, key))
        if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_is_number(v) for v in value):
            raise bad(key, value, "expected a list of 3 finite numbers (one per RGB channel)")
        if key == "std" and any(v <= 0 for v in value):
            raise bad(key, value, "every standard deviation must be positive")
        stats[key] = tuple(float(v) for v in value)
    choices = {}
    for key, allowed in (("interpolation", INTERPOLATIONS), ("resize_mode", RESIZE_MODES)):
        value = pre.get(key, getattr(default, key))
        if value not in allowed:
            raise bad(key, value, f"expected one of {', '.join(allowed)}")
        choices[key] = value
    return PreprocessCfg(image_size=size, mean=stats["mean"], std=stats["std"], **choices)


OFFLINE_ENVS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
"""Environment variables that declare the machine offline (huggingface_hub's): a tag is then looked up in
the caches only, and fails at once when it is not there."""
CONNECT_TIMEOUT_S = 10.0
"""How long the one connection attempt before a download may take (no retry: an offline machine answers at once)."""
_TRUE_VALUES = ("1", "ON", "YES", "TRUE")


def offline_mode() -> str | None:
    """The variable of :data:`OFFLINE_ENVS` that is set to a true value (``1``, ``yes``...), or ``None``."""
    for key in OFFLINE_ENVS:
        if os.environ.get(key, "").strip().upper() in _TRUE_VALUES:
            return key
    return None


def _unreachable(url: str) -> str | None:
    """Why ``url``'s host (or the proxy that serves it) cannot be reached, or ``None`` when it can.

    One connection attempt: huggingface_hub retries a failed request five times with a growing wait
    (about 50 s offline for one tag), so the download starts only once the host answered."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_parts.hostname or "", proxy_parts.port or 80
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as err:
        return f"cannot reach {host}:{port} ({type(err).__name__}: {err})"


def _hub_file(cfg: dict) -> tuple[str, str] | None:
    """The Hugging Face repository and file open_clip downloads a tag from, or ``None`` when it uses the URL."""
    hub = cfg.get("hf_hub", "")
    if not hub or not open_clip.pretrained.has_hf_hub():
        return None
    repo, filename = os.path.split(hub)
    return repo, filename or open_clip.pretrained.HF_WEIGHTS_NAME


def _cached_tag_file(cfg: dict, cache: Path, hub_cache: str) -> str | None:
    """A tag's weight file already on this machine (no network): the URL's file in ``cache``, or the hub
    file (or its safetensors twin, which open_clip prefers) in the Hugging Face cache."""
    url = cfg.get("url", "")
    if url and (cache / os.path.basename(url)).is_file():
        return str(cache / os.path.basename(url))
    hub = _hub_file(cfg)
    if hub is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo, filename = hub
    safe = getattr(open_clip.pretrained, "_get_safe_alternatives", lambda name: ())
    for name in (*safe(filename), filename):
        found = try_to_load_from_cache(repo, name, cache_dir=hub_cache)
        if isinstance(found, str):
            return found
    return None


def _unavailable(arch: ClipArch, tag: str, cfg: dict, cache: Path, hub_cache: str, own_cache: bool,
                 reason: str) -> PretrainedUnavailable:
    """The error for a tag whose weights are neither cached nor downloadable: where to put them instead."""
    places = []
    if cfg.get("url"):
        name = os.path.basename(cfg["url"])
        places.append(f"put {name} ({cfg['url']}) in {cache}"
                      + ("" if own_cache else " (VLPROMPT_CLIP_CACHE names another folder)"))
    hub = _hub_file(cfg)
    if hub:
        places.append(f"copy a Hugging Face cache holding {hub[0]}/{hub[1]} (https://huggingface.co/{hub[0]}) "
                      f"into {hub_cache}")
    places.append(f"pass the weight file's path instead of the tag: build_clip({arch.name!r}, "
                  f"pretrained='/path/to/file.pt') or load_prompted_clip({{'backbone': {arch.name!r}, "
                  f"'pretrained': '/path/to/file.pt'}})")
    return PretrainedUnavailable(
        f"no pretrained weights {arch.name}/{tag} (architecture {arch.name}, tag {tag!r}) on this machine, and "
        f"they cannot be downloaded: {reason}. On a machine with network they download on first use; here, "
        + "; or ".join(places) + "."
    )


def _download_tag(arch: ClipArch, tag: str, cache_dir: str | None) -> tuple[Path, dict]:
    """The weight file of open_clip tag ``tag``: from the caches, else downloaded once the host answers.

    Offline (:func:`offline_mode`) or when the first connection fails, the error comes at once (no
    retries) and says where to put the file."""
    cfg = open_clip.get_pretrained_cfg(arch.open_clip_name, tag)
    if not cfg:
        tags = list(arch.local_weights) + open_clip.list_pretrained_tags_by_model(arch.open_clip_name)
        raise PretrainedUnavailable(
            f"{tag!r} is neither a file nor a known pretrained tag for {arch.name!r}; "
            f"known tags: {', '.join(tags) or 'none'}"
        )
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    hub = _hub_file(cfg)
    hub_cache, endpoint = "", cfg.get("url", "")
    if hub:
        from huggingface_hub import constants

        hub_cache = str(Path(cache_dir).expanduser()) if cache_dir else constants.HF_HUB_CACHE
        endpoint = constants.ENDPOINT
    target = _cached_tag_file(cfg, cache, hub_cache)
    url_copy = bool(cfg.get("url")) and target == str(cache / os.path.basename(cfg["url"]))
    if target is None:
        offline = offline_mode()
        reason = f"{offline} is set" if offline else _unreachable(endpoint)
        if reason:
            raise _unavailable(arch, tag, cfg, cache, hub_cache, bool(cache_dir), reason)
    try:
        if target is None:  # the hub's cache is open_clip's for hub downloads; URL downloads go to ``cache``
            target = open_clip.download_pretrained(cfg, cache_dir=cache_dir if hub else str(cache))
        elif url_copy and not offline_mode():  # open_clip checks the SHA-256 (a partial copy is fetched again)
            target = open_clip.pretrained.download_pretrained_from_url(cfg["url"], cache_dir=str(cache))
    except Exception as err:  # network, hub or cache errors all mean the same thing to the user
        detail = str(err).splitlines()[0] if str(err) else "no detail"
        raise _unavailable(arch, tag, cfg, cache, hub_cache, bool(cache_dir),
                           f"{type(err).__name__}: {detail}") from None
    if not target:
        raise PretrainedUnavailable(f"open_clip gave no file for {arch.name}/{tag}")
    return Path(target), cfg


def resolve_pretrained(
    arch: ClipArch,
    pretrained: str | os.PathLike | None,
    *,
    quick_gelu: bool | None = None,
    cache_dir: str | None = None,
    max_bytes: int | None = None,
) -> tuple[LoadedWeights | None, WeightsInfo]:
    """Find and read the weights ``pretrained`` names, and describe them.

    ``quick_gelu`` overrides what the weights say (needed only for a plain state dict whose
    origin the file does not tell: without it such a file loads with GELU, and a
    :class:`ActivationUnknownWarning` says so). ``max_bytes`` bounds the file (see
    :func:`~vlprompt.backbones.checkpoint.read_weights`); by default it follows from the
    architecture's size.
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

    if max_bytes is None:
        max_bytes = max_weight_bytes(arch_num_elements(arch))
    loaded = read_weights(path, max_bytes=max_bytes)
    meta = loaded.metadata
    if "arch" in meta and not isinstance(meta["arch"], str):
        raise CheckpointError(f"{path}: metadata 'arch' is a {type(meta['arch']).__name__}, not a string")
    if "arch" in meta and meta["arch"] != arch.name:
        raise CheckpointError(f"{path}: weights were saved for architecture {meta['arch']!r}, not {arch.name!r}")
    qg = quick_gelu
    if qg is None:
        qg = tag_cfg.get("quick_gelu", _parse_bool(meta.get("quick_gelu"), path, "quick_gelu"))
    if qg is None and not tag_cfg:
        msg = (
            f"{path}: the file does not record which activation its weights were trained with; assuming "
            f"GELU (open_clip's default). Pass quick_gelu=True for OpenAI-derived weights, or "
            f"quick_gelu=False to confirm GELU."
        )
        logging.getLogger("vlprompt").warning(msg)
        warnings.warn(msg, ActivationUnknownWarning, stacklevel=3)
    if tag_cfg:
        pre = PreprocessCfg(
            image_size=arch.image_size,
            mean=tuple(tag_cfg.get("mean", OPENAI_MEAN)),
            std=tuple(tag_cfg.get("std", OPENAI_STD)),
            interpolation=tag_cfg.get("interpolation", "bicubic"),
            resize_mode=tag_cfg.get("resize_mode", "shortest"),
        )
    else:
        pre = _preprocess_from_metadata(meta, default_pre, path)
    return loaded, WeightsInfo(arch.name, name, bool(qg), pre)
