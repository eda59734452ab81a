"""GRAM's pair features: the frozen CLIP's embeddings of unlabelled image-text pairs (reimplemented
from the paper).

:func:`encode_pairs`: one streaming pass over a :class:`~vlprompt.datasets.pairs.PairSource` computes the
frozen CLIP's normalised image and caption embeddings (and, for learners that prompt the image tower,
keeps the preprocessed images as a uint8 file), cached on disk so later runs skip it. The clustering and
the tasks drawn from these features are in :mod:`vlprompt.meta.tasks`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..backbones import PromptableCLIP, save_safetensors
from ..datasets.pairs import PairSource
from ..engine.checkpoint import read_vlprompt_safetensors
from ..io import atomic_output, config_hash
from ..learners.common import fit_to_context

FEATURES_FILE = "pair_features.safetensors"
IMAGES_FILE = "pair_images.u8"

@dataclass
class PairFeatures:
    """Normalised frozen embeddings of ``N`` pairs, their captions, and (optionally) their images."""

    image: torch.Tensor  # (N, E) float32
    text: torch.Tensor  # (N, E) float32
    captions: list[str]
    images: np.ndarray | None = None  # (N, 3, S, S) uint8, a memory map
    stats: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.captions)

    def joint(self) -> torch.Tensor:
        """The cross-modal embedding ``[image, text] / sqrt(2)`` (unit norm)."""
        return torch.cat([self.image, self.text], dim=1) / 2 ** 0.5


def _uint8_transform(size: int, interpolation: str = "bicubic") -> Callable[[Any], np.ndarray]:
    """PIL image -> shorter side to ``size``, centre crop, ``(3, size, size)`` uint8 (the test transform,
    unnormalised), built once per pass."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Resize

    mode = InterpolationMode.BICUBIC if interpolation == "bicubic" else InterpolationMode.BILINEAR
    resize_crop = Compose([Resize(size, interpolation=mode), CenterCrop(size)])
    return lambda image: np.asarray(resize_crop(image), dtype=np.uint8).transpose(2, 0, 1).copy()


def normalise_images(images: np.ndarray | torch.Tensor, backbone: PromptableCLIP) -> torch.Tensor:
    """uint8 ``(B, 3, S, S)`` -> the backbone's normalised float input on its device and dtype."""
    pre = backbone.info.preprocess
    x = torch.as_tensor(np.asarray(images)).to(backbone.device, torch.float32) / 255.0
    mean = torch.tensor(pre.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(backbone.logit_scale.dtype)


def _fingerprint(source: PairSource, backbone: PromptableCLIP, keep_images: bool) -> str:
    info = {"source": source.describe(), "backbone": backbone.info.to_dict(), "keep_images": keep_images}
    return config_hash(info, length=16, compact=False)


def caption_token_ids(backbone: PromptableCLIP, captions: Sequence[str]) -> torch.Tensor:
    return backbone.tokenize([fit_to_context(backbone, lambda t: t, c) or c[:40] for c in captions])


@torch.no_grad()
def encode_pairs(
    source: PairSource,
    backbone: PromptableCLIP,
    cache_dir: str | os.PathLike,
    keep_images: bool = False,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> PairFeatures:
    """The pairs' frozen embeddings, from ``cache_dir`` when a pass over the same source with the same
    backbone is cached there, else computed in one streaming pass and cached (written atomically)."""
    cache_dir = Path(cache_dir)
    key = _fingerprint(source, backbone, keep_images)
    feature_file, image_file = cache_dir / FEATURES_FILE, cache_dir / IMAGES_FILE
    size = backbone.info.preprocess.image_size
    if feature_file.is_file():
        tensors, info = read_vlprompt_safetensors(feature_file)
        if info.get("fingerprint") == key and (not keep_images or image_file.is_file()):
            n = len(info["captions"])
            images = np.memmap(image_file, np.uint8, "r", shape=(n, 3, size, size)) if keep_images else None
            return PairFeatures(tensors["image"], tensors["text"], list(info["captions"]), images, info["stats"])
    cache_dir.mkdir(parents=True, exist_ok=True)
    captions: list[str] = []
    image_feats, text_feats = [], []
    out = None
    batch_images: list[np.ndarray] = []
    batch_captions: list[str] = []

    def flush() -> None:
        if not batch_images:
            return
        pixels = np.stack(batch_images)
        if out is not None:
            out.write(pixels.tobytes())
        image_feats.append(backbone.encode_image(normalise_images(pixels, backbone), normalize=True).float().cpu())
        ids = caption_token_ids(backbone, batch_captions)
        text_feats.append(backbone.encode_text(ids, normalize=True).float().cpu())
        if progress is not None:
            progress(len(batch_images))
        batch_images.clear()
        batch_captions.clear()

    with contextlib.ExitStack() as stack:  # the pixels stream into a temporary file, moved into place at the end
        if keep_images:
            out = stack.enter_context(open(stack.enter_context(atomic_output(image_file)), "wb"))
        to_uint8 = _uint8_transform(size, backbone.info.preprocess.interpolation)
        for pair in source:
            batch_images.append(to_uint8(pair.image))
            batch_captions.append(pair.caption)
            captions.append(pair.caption)
            if len(batch_images) == batch_size:
                flush()
        flush()
    stats = source.stats.to_dict()
    image, text = torch.cat(image_feats), torch.cat(text_feats)
    save_safetensors({"image": image, "text": text}, feature_file,
                     {"vlprompt": {"fingerprint": key, "captions": captions, "stats": stats,
                                   "source": source.describe()}})
    images = np.memmap(image_file, np.uint8, "r", shape=(len(captions), 3, size, size)) if keep_images else None
    return PairFeatures(image, text, captions, images, stats)
