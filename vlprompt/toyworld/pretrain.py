"""Contrastive pretraining of a small CLIP on toy-world image-caption pairs.

Pairs are generated on the fly (a new, seeded batch every step) in a loader worker, so the run
never sees the same image twice and needs no disk. The towers are vlprompt's own (with the text
context cut after the last end-of-text token, which makes short captions cheap).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..backbones import PromptableCLIP, WeightsInfo, build_open_clip_model, get_arch, save_safetensors
from ..backbones.pretrained import PreprocessCfg
from ..backbones.tokenizer import PromptTokenizer
from .datasets import GENERATOR_VERSION, sample_pairs
from .render import corrupt
from .text import CaptionProbs
from .world import BACKGROUNDS, COLOURS, PATTERNS, SHAPES, SIZES, STYLES

CLIP_MEAN = torch.tensor(PreprocessCfg(64).mean).view(1, 3, 1, 1)
CLIP_STD = torch.tensor(PreprocessCfg(64).std).view(1, 3, 1, 1)


@dataclass
class PretrainConfig:
    """Settings of a pretraining run (all recorded in the checkpoint metadata)."""

    arch: str = "toy"
    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    seed: int = 0
    max_minutes: float | None = None  # a safety stop; the schedule follows ``steps``
    # Patterns are named in few captions, so zero-shot CLIP knows pattern words only weakly while the
    # image features (through the attribute heads below) carry them: the adaptation headroom.
    caption_probs: dict = field(default_factory=lambda: asdict(CaptionProbs(pattern=0.15)))
    style_probs: dict = field(default_factory=lambda: {"photo": 0.8, "sketch": 0.1, "night": 0.1})
    p_two: float = 0.25  # share of two-object scenes
    log_every: int = 25
    # Weight of the auxiliary attribute loss: linear heads on the image embedding predict the
    # first object's shape, colour, pattern and size, and the scene's style and background. The
    # heads are discarded after pretraining. 0 gives pure contrastive (CLIP) training. They stand in
    # for the visual richness real CLIP gets from its data: features that know more than captions say.
    aux_weight: float = 1.0
    # Share of images given the toy-shapes-noise domain's corruption (gaussian noise, severity drawn
    # uniformly from 1-5) on top of their style; 0 (the student) leaves the stream untouched.
    noise_prob: float = 0.0


#: named recipes for tools/pretrain_toy_clip.py --recipe; each trains the architecture of its name
RECIPES: dict[str, PretrainConfig] = {
    "toy": PretrainConfig(),
    # RLCF's teacher: the student's architecture (a second pretrained tag of ``toy``), another seed, and most
    # of its images in the shifted domains (sketch and night styles, gaussian noise on any style) where the
    # student sees a fifth. 1000 steps took 23.5 minutes on 2 quiet CPU cores. (A wider, deeper teacher,
    # width 160 and 5 layers, runs at 2.0 s/step; after 400 steps it was weaker than this one everywhere.)
    "toy-teacher": PretrainConfig(arch="toy", seed=1, max_minutes=30.0,
                                  style_probs={"photo": 0.4, "sketch": 0.3, "night": 0.3}, noise_prob=0.3),
}


class _PairStream(IterableDataset):
    """Batches of (normalised images, token ids), batch ``i`` seeded by ``(seed, i)``."""

    def __init__(self, cfg: PretrainConfig, image_size: int, tokenizer: PromptTokenizer) -> None:
        self.cfg, self.image_size, self.tokenizer = cfg, image_size, tokenizer

    def __iter__(self):
        if get_worker_info() is not None:
            torch.set_num_threads(1)
        probs = CaptionProbs(**self.cfg.caption_probs)
        for step in range(self.cfg.steps):
            images, captions, scenes = sample_pairs(
                self.cfg.batch_size, seed=(self.cfg.seed, step), size=self.image_size,
                style_probs=self.cfg.style_probs, caption_probs=probs, p_two=self.cfg.p_two, return_scenes=True,
            )
            if self.cfg.noise_prob > 0:
                add_noise(images, self.cfg.noise_prob, np.random.default_rng((self.cfg.seed, step, 1)))
            x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
            yield (x - CLIP_MEAN) / CLIP_STD, self.tokenizer(captions), scene_attributes(scenes)


def add_noise(images: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    """Corrupt each of ``(N, H, W, 3)`` uint8 ``images`` in place with probability ``prob`` by
    gaussian noise of a random severity (1-5); returns the array."""
    for i in np.flatnonzero(rng.random(len(images)) < prob):
        images[i] = corrupt(images[i], "gaussian_noise", int(rng.integers(1, 6)), rng=rng)
    return images


ATTRIBUTES = {"shape": SHAPES, "colour": COLOURS, "pattern": PATTERNS, "size": SIZES,
              "style": STYLES, "background": BACKGROUNDS}


def scene_attributes(scenes) -> torch.Tensor:
    """``(N, 6)`` attribute indices (first object's shape, colour, pattern, size; style; background)."""
    rows = []
    for scene in scenes:
        o = scene.objects[0]
        values = (o.shape, o.colour, o.pattern, o.size, scene.style, scene.background)
        rows.append([ATTRIBUTES[k].index(v) for k, v in zip(ATTRIBUTES, values, strict=True)])
    return torch.tensor(rows)


def _lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, progress)))


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """The symmetric InfoNCE loss of CLIP on normalised features."""
    logits = logit_scale * image @ text.t()
    labels = torch.arange(len(image), device=image.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def pretrain_clip(
    cfg: PretrainConfig,
    progress: Callable[[int, float], None] | None = None,
    num_workers: int = 1,
    device: str | torch.device = "cpu",
) -> tuple[PromptableCLIP, list[dict]]:
    """Train an architecture from scratch on generated pairs; returns the model and the loss log."""
    torch.manual_seed(cfg.seed)
    arch = get_arch(cfg.arch)
    model = build_open_clip_model(cfg.arch).to(device)
    info = WeightsInfo(cfg.arch, None, False, PreprocessCfg(image_size=arch.image_size))
    clip = PromptableCLIP(model, info)
    model.requires_grad_(True)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6,
    )
    heads = torch.nn.ModuleList(torch.nn.Linear(clip.embed_dim, len(v)) for v in ATTRIBUTES.values()).to(device)
    if cfg.aux_weight:
        optimizer.add_param_group({"params": list(heads.parameters()), "weight_decay": 0.0})
    stream = _PairStream(cfg, arch.image_size, clip.tokenizer)
    loader = DataLoader(stream, batch_size=None, num_workers=num_workers, prefetch_factor=4 if num_workers else None)
    log: list[dict] = []
    start = time.perf_counter()
    window: list[float] = []
    for step, batch in enumerate(loader):
        images, ids, attributes = (t.to(device, non_blocking=True) for t in batch)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg)
        image_features = clip.encode_image(images)
        loss = clip_loss(F.normalize(image_features, dim=-1), clip.encode_text(ids, normalize=True),
                         model.logit_scale.exp())
        if cfg.aux_weight:
            aux = sum(F.cross_entropy(head(image_features), attributes[:, i]) for i, head in enumerate(heads))
            loss = loss + cfg.aux_weight * aux / len(heads)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        window.append(loss.item())
        if progress is not None:
            progress(step, window[-1])
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            log.append({"step": step + 1, "loss": float(np.mean(window)), "lr": _lr_at(step, cfg),
                        "seconds": round(time.perf_counter() - start, 1)})
            window = []
        if cfg.max_minutes is not None and time.perf_counter() - start > 60 * cfg.max_minutes:
            log.append({"stopped_at_step": step + 1, "reason": f"time limit {cfg.max_minutes} min"})
            break
    model.requires_grad_(False)
    return clip.eval(), log


def save_pretrained(clip: PromptableCLIP, path: str | Path, cfg: PretrainConfig, log: list[dict]) -> Path:
    """Write the weights in fp16 safetensors with what is needed to rebuild and judge them."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in clip.model.state_dict().items()}
    meta = {
        "arch": cfg.arch,
        "quick_gelu": "false",
        "preprocess": json.dumps(asdict(clip.info.preprocess)),
        "trained_on": f"vlprompt toy world, generator version {GENERATOR_VERSION}",
        "pretrain_config": json.dumps(asdict(cfg)),
        "pretrain_log_tail": json.dumps(log[-5:]),
    }
    save_safetensors(state, path, meta)
    return Path(path)
