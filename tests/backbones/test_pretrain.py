"""Contrastive pretraining of the tiny CLIP: the loss goes down, and the checkpoint round-trips."""

import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from vlprompt.backbones import build_clip, read_weights
from vlprompt.backbones.archs import WEIGHTS_DIR, get_arch
from vlprompt.backbones.tokenizer import PromptTokenizer
from vlprompt.toyworld.datasets import sample_pairs
from vlprompt.toyworld.pretrain import (
    CLIP_MEAN,
    CLIP_STD,
    RECIPES,
    PretrainConfig,
    _PairStream,
    add_noise,
    clip_loss,
    pretrain_clip,
    save_pretrained,
)
from vlprompt.toyworld.text import CaptionProbs


def test_clip_loss_is_low_for_matched_pairs_and_high_for_shuffled():
    torch.manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(16, 32), dim=-1)
    matched = clip_loss(feats, feats, torch.tensor(50.0))
    shuffled = clip_loss(feats, feats.roll(1, 0), torch.tensor(50.0))
    assert matched < 0.1 < 5 < shuffled


@pytest.mark.slow  # a 40-step pretraining loop (25 s); the teacher recipe's 2 steps run by default
def test_a_few_steps_lower_the_loss_and_the_checkpoint_loads_back(tmp_path):
    # contrastive + attribute-head loss; the conv stem starts slowly, so 40 steps at a high lr
    # (seeded and deterministic: measured 4.654 -> 4.515)
    cfg = PretrainConfig(steps=40, batch_size=24, lr=3e-3, warmup_steps=3, log_every=10, seed=3)
    clip, log = pretrain_clip(cfg, num_workers=0)
    losses = [row["loss"] for row in log if "loss" in row]
    assert len(losses) == 4
    assert losses[-1] < losses[0] - 0.1, losses
    assert all(not p.requires_grad for p in clip.parameters())

    path = save_pretrained(clip, tmp_path / "toy.safetensors", cfg, log)
    meta = read_weights(path).metadata
    assert meta["arch"] == "toy" and json.loads(meta["pretrain_config"])["steps"] == 40
    loaded = build_clip("toy", pretrained=path)
    assert not loaded.info.quick_gelu and loaded.image_size == 64
    ids = clip.tokenize(["a red circle.", "two blue stars"])
    with torch.no_grad():  # fp16 storage: equal up to half-precision rounding
        assert torch.allclose(loaded.encode_text(ids, normalize=True), clip.encode_text(ids, normalize=True),
                              atol=2e-2)


def test_the_student_recipe_is_the_default_one_and_the_one_its_packaged_weights_record():
    student = asdict(RECIPES["toy"])
    assert student == asdict(PretrainConfig()) and student["noise_prob"] == 0.0
    shipped = json.loads(read_weights(WEIGHTS_DIR / "toy_clip.safetensors").metadata["pretrain_config"])
    assert shipped == {k: v for k, v in student.items() if k != "noise_prob"}  # saved before the field existed


def test_without_noise_the_pair_stream_is_the_generated_pairs_unchanged():
    cfg = PretrainConfig(steps=1, batch_size=4, seed=5)
    images, ids, _ = next(iter(_PairStream(cfg, 64, PromptTokenizer())))
    raw, captions = sample_pairs(4, seed=(5, 0), style_probs=cfg.style_probs,
                                 caption_probs=CaptionProbs(**cfg.caption_probs), p_two=cfg.p_two)
    expected = (torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255 - CLIP_MEAN) / CLIP_STD
    assert torch.allclose(images, expected) and torch.equal(ids, PromptTokenizer()(captions))


def test_add_noise_corrupts_the_chosen_share_of_images_in_place():
    images = sample_pairs(64, seed=1)[0]
    clean = images.copy()
    assert add_noise(images, 0.0, np.random.default_rng(0)) is images and np.array_equal(images, clean)
    add_noise(images, 0.5, np.random.default_rng(0))
    changed = [not np.array_equal(a, b) for a, b in zip(images, clean, strict=True)]
    assert 16 < sum(changed) < 48
    noisy = add_noise(clean.copy(), 1.0, np.random.default_rng(0))
    assert all(not np.array_equal(a, b) for a, b in zip(noisy, clean, strict=True))


def test_the_teacher_recipe_trains_the_toy_clip_on_shifted_scenes_for_two_steps():
    teacher = RECIPES["toy-teacher"]
    assert teacher.arch == "toy" and teacher.noise_prob > 0 and teacher.max_minutes <= 30
    assert teacher.seed != PretrainConfig().seed, "not the student's image stream"
    assert teacher.style_probs["photo"] < PretrainConfig().style_probs["photo"]
    cfg = replace(teacher, steps=2, batch_size=8, warmup_steps=1, log_every=1)
    clip, log = pretrain_clip(cfg, num_workers=0)
    assert [row["step"] for row in log] == [1, 2] and all(np.isfinite(row["loss"]) for row in log)
    assert clip.embed_dim == 128 and len(clip.model.visual.transformer.resblocks) == 4


def test_the_packaged_teacher_loads_offline_with_its_architecture():
    path = WEIGHTS_DIR / get_arch("toy").local_weights["toy-teacher"]
    assert path.stat().st_size <= 25e6
    meta = read_weights(path).metadata
    assert meta["arch"] == "toy" and json.loads(meta["pretrain_config"]) == asdict(RECIPES["toy-teacher"])
    teacher = build_clip("toy", pretrained="toy-teacher")
    student = build_clip("toy", pretrained="toy")
    assert not torch.equal(teacher.model.token_embedding.weight, student.model.token_embedding.weight)
    assert teacher.image_size == 64 and not teacher.info.quick_gelu
    assert teacher.model.token_embedding.weight.shape == (49408, 128)
    with torch.no_grad():
        image = teacher.encode_image(torch.zeros(2, 3, 64, 64))
        text = teacher.encode_text(teacher.tokenize(["a red circle.", "a sketch of a star"]), normalize=True)
    assert image.shape == (2, 128) and text.shape == (2, 128) and torch.isfinite(image).all()
