"""GRAM's pair features: the frozen CLIP's embeddings of unlabelled image-text pairs (reimplemented
from the paper).

:func:`encode_pairs`: one streaming pass over a :class:`~vlprompt.datasets.pairs.PairSource` computes the
frozen CLIP's normalised image and caption embeddings (and, for learners that prompt the image tower,
keeps the preprocessed images as a uint8 file), cached on disk so later runs skip it. The clustering and
the tasks drawn from these features are in :mod:`vlprompt.meta.tasks`.

The cache is keyed on content: besides the source's description, the backbone and ``keep_images``, it
records the sha256 of every file the pass opened (the TSV / JSONL file and each image it names, or the
shards; :attr:`~vlprompt.datasets.pairs.PairSource.opened`), with each file's size, nanosecond mtime and
inode. It is reused only while every such file still has the recorded content: a file whose size, mtime
or inode changed is hashed again and must match (a ``touch`` still reuses; an inverted image or a
same-size caption edit does not); one whose three are unchanged is trusted without reading it (the
shortcut of :func:`vlprompt.io.file_digest`: only an edit that restores the old nanosecond mtime by hand
passes). A file that changed while the pass read it is recorded as unknown, so the next run recomputes.
The records (one per image: too many for the safetensors header, which already holds the captions) are
in ``pair_inputs.json`` beside the features, whose metadata holds that file's sha256.
"""

from __future__ import annotations

import contextlib
import json
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
from ..io import atomic_output, atomic_write_json, config_hash, file_digest
from ..learners.common import fit_to_context

FEATURES_FILE = "pair_features.safetensors"
IMAGES_FILE = "pair_images.u8"
INPUTS_FILE = "pair_inputs.json"  # what the pass read: {path: [size, mtime_ns, inode, sha256]}, see the module doc

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


def _input_records(opened: dict[str, tuple[int, int, int] | None]) -> dict[str, list[Any] | None]:
    """What the cache records of each file a pass opened: ``[size, mtime_ns, inode, sha256]`` (``None`` for a
    file that was missing); a file whose stat changed since it was opened gets no digest (it matches nothing)."""
    records: dict[str, list[Any] | None] = {}
    for path, when_opened in opened.items():
        try:
            st = os.stat(path)
        except OSError:
            records[path] = None if when_opened is None else [-1, -1, -1, None]
            continue
        now = (st.st_size, st.st_mtime_ns, st.st_ino)
        try:
            digest = file_digest(path) if now == when_opened else None
        except OSError:
            digest = None
        records[path] = [*now, digest]
    return records


def _inputs_unchanged(inputs_file: Path, digest: Any) -> bool:
    """Whether ``inputs_file`` is the one the features were written with (its sha256 is ``digest``) and every
    input it records still has its recorded content (see the module doc)."""
    if not isinstance(digest, str) or not inputs_file.is_file():
        return False  # a cache from before inputs were recorded, or its records are gone
    try:
        if file_digest(inputs_file) != digest:
            return False
        records = json.loads(inputs_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    if not isinstance(records, dict):
        return False
    for path, record in records.items():
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is None or record is None:
            if st is None and record is None:
                continue  # missing then, missing now
            return False
        if not isinstance(record, list) or len(record) != 4 or record[3] is None:
            return False
        if [st.st_size, st.st_mtime_ns, st.st_ino] == record[:3]:
            continue  # the stat shortcut
        try:
            if st.st_size != record[0] or file_digest(path) != record[3]:
                return False
        except OSError:
            return False
    return True


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
    """The pairs' frozen embeddings, from ``cache_dir`` when a pass over the same source, with every file it
    read unchanged in content, with the same backbone is cached there, else computed in one streaming pass
    and cached (written atomically)."""
    cache_dir = Path(cache_dir)
    key = _fingerprint(source, backbone, keep_images)
    feature_file, image_file, inputs_file = cache_dir / FEATURES_FILE, cache_dir / IMAGES_FILE, cache_dir / INPUTS_FILE
    size = backbone.info.preprocess.image_size
    if feature_file.is_file():
        tensors, info = read_vlprompt_safetensors(feature_file)
        if (info.get("fingerprint") == key and (not keep_images or image_file.is_file())
                and _inputs_unchanged(inputs_file, info.get("inputs_sha256"))):
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
    atomic_write_json(inputs_file, _input_records(source.opened))
    save_safetensors({"image": image, "text": text}, feature_file,
                     {"vlprompt": {"fingerprint": key, "captions": captions, "stats": stats,
                                   "source": source.describe(), "inputs_sha256": file_digest(inputs_file)}})
    images = np.memmap(image_file, np.uint8, "r", shape=(len(captions), 3, size, size)) if keep_images else None
    return PairFeatures(image, text, captions, images, stats)
