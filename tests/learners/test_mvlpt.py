"""MVLPT's prompt families (MCoOp, MVPT, MUPT), the backbone abilities they use (prompts after the
pre-transformer LayerNorm, text activation checkpointing) and source-to-target loading.

The registry-wide contracts (only prompts learn, state round-trips, classes switch) run for the three
learners in tests/learners/test_learners.py; the official numbers are checked in tests/learners/test_fidelity_mvlpt.py.
"""

import math

import pytest
import torch
from helpers import ROOT, write_learned

from vlprompt.backbones import ImagePrompts, TextPrompts, TokenInsertion, build_clip
from vlprompt.backbones.checkpoint import CheckpointError
from vlprompt.learners import MUPT, MVPT, CoOp, MCoOp

NAMES = ["red_circle", "blue square", "Green_Triangle", "pink star", "brown hexagon"]  # odd count, underscores


def images(clip, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, clip.image_size, clip.image_size, generator=g)


# ----------------------------------------------------------------------------------------- backbone
def _capture(module, store):
    return module.register_forward_hook(lambda m, args, out: store.append((args[0].detach().clone(), out.detach())))


@pytest.mark.parametrize("after", [False, True])
def test_image_prompts_before_or_after_ln_pre(clip, after):
    visual = clip.model.visual
    tokens = torch.randn(4, clip.vision_width)
    seen_ln, seen_block = [], []
    hooks = [_capture(visual.ln_pre, seen_ln), _capture(visual.transformer.resblocks[0], seen_block)]
    try:
        clip.encode_image(images(clip, 2), ImagePrompts(tokens=tokens, after_ln_pre=after))
    finally:
        for h in hooks:
            h.remove()
    n_patches = (clip.image_size // clip.patch_size) ** 2
    ln_in, _ = seen_ln[0]
    block_in, _ = seen_block[0]
    # the LayerNorm sees the prompts only when they go in before it
    assert ln_in.shape[1] == 1 + n_patches + (0 if after else 4)
    if after:  # the prompts enter the first block exactly as given
        torch.testing.assert_close(block_in[:, -4:], tokens.expand(2, -1, -1), rtol=0, atol=0)
    else:
        assert not torch.allclose(block_in[:, -4:], tokens.expand(2, -1, -1))


def test_text_checkpointing_same_features_and_gradients(clip):
    ids = clip.tokenize([f"{n.replace('_', ' ')}." for n in NAMES], reserve=4)
    plain = build_clip("test-tiny")
    plain.load_state_dict(clip.state_dict())
    ckpt = build_clip("test-tiny", text_checkpointing=True)
    ckpt.load_state_dict(clip.state_dict())
    assert ckpt.text_checkpointing and not plain.text_checkpointing
    out = []
    for model in (plain, ckpt):
        torch.manual_seed(3)
        ctx = torch.randn(4, clip.text_width, requires_grad=True)
        deep = {1: torch.randn(4, clip.text_width, requires_grad=True)}
        feats = model.encode_text(ids, TextPrompts(insert=[TokenInsertion(ctx, 1)], deep=deep), normalize=True)
        weights = torch.linspace(-1, 1, feats.numel()).reshape(feats.shape)
        (feats * weights).sum().backward()
        out.append((feats.detach(), ctx.grad, deep[1].grad))
    for a, b in zip(*out, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_vision_checkpointing_same_features_and_gradients(clip):
    x = images(clip, 2)
    out = []
    for flag in (False, True):
        model = build_clip("test-tiny", vision_checkpointing=flag)
        model.load_state_dict(clip.state_dict())
        torch.manual_seed(4)
        shallow = torch.randn(4, clip.vision_width, requires_grad=True)
        deep = {1: torch.randn(4, clip.vision_width, requires_grad=True)}
        feats = model.encode_image(x, ImagePrompts(tokens=shallow, deep=deep, after_ln_pre=True), normalize=True)
        (feats * torch.linspace(-1, 1, feats.numel()).reshape(feats.shape)).sum().backward()
        out.append((feats.detach(), shallow.grad, deep[1].grad))
    for a, b in zip(*out, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------- learners
def test_mcoop_is_coop_with_the_multitask_defaults(clip):
    torch.manual_seed(0)
    learner = MCoOp(clip, NAMES)
    assert learner.ctx.shape == (16, clip.text_width) and learner.class_token_position == "middle"
    assert 0.015 < learner.ctx.std().item() < 0.025  # N(0, 0.02^2), no phrase
    coop = CoOp(clip, NAMES, n_ctx=16, ctx_init="", class_token_position="middle")
    coop.load_state_dict(learner.state_dict())
    x = images(clip)
    torch.testing.assert_close(learner(x), coop(x))


def test_mvpt_prompts_and_init(clip):
    torch.manual_seed(0)
    learner = MVPT(clip, NAMES, n_ctx=16, depth=12)
    layers, width, patch = clip.vision_layers, clip.vision_width, clip.patch_size
    assert learner.vision_ctx.shape == (16, width)
    assert learner.vision_deep.shape == (layers - 1, 16, width)  # depth capped at the tower's layers
    bound = math.sqrt(6.0 / (3 * patch * patch + width))
    for p in (learner.vision_ctx, learner.vision_deep):
        assert p.abs().max() <= bound and p.abs().max() > 0.9 * bound  # uniform in +-bound
    prompts = learner.image_prompts(learner.vision_ctx, learner.vision_deep)
    assert prompts.after_ln_pre and sorted(prompts.deep) == list(range(1, layers))
    # the class side is frozen "a photo of a {class}." with underscores written as spaces
    from vlprompt.learners.common import class_text_features
    torch.testing.assert_close(learner.encode_classes(),
                               class_text_features(clip, [n.replace("_", " ") for n in NAMES], "a photo of a {}."))


def test_mupt_official_coupling_keeps_tokens_apart(clip):
    torch.manual_seed(0)
    learner = MUPT(clip, NAMES)
    text, shallow, deep = learner.coupled_prompts()
    assert text.shape == (4, clip.text_width) and shallow.shape == (4, clip.vision_width)
    assert deep.shape == (clip.vision_layers - 1, 4, clip.vision_width)
    with torch.no_grad():
        learner.vision_deep[0].add_(1.0)  # change one layer's visual tokens
    text2, shallow2, deep2 = learner.coupled_prompts()
    # official: every token attends only to itself, so nothing else moves
    torch.testing.assert_close(text2, text, rtol=0, atol=0)
    torch.testing.assert_close(shallow2, shallow, rtol=0, atol=0)
    torch.testing.assert_close(deep2[1:], deep[1:], rtol=0, atol=0)
    assert not torch.allclose(deep2[0], deep[0])

    mixing = MUPT(clip, NAMES, token_mixing=True)
    mixing.load_state_dict(learner.state_dict())
    a = mixing.coupled_prompts()[0]
    with torch.no_grad():
        mixing.vision_deep[0].add_(1.0)
    assert not torch.allclose(mixing.coupled_prompts()[0], a)  # the deviation: tokens see each other


def test_mupt_projections_follow_the_tower_widths():
    torch.manual_seed(0)
    clip = build_clip("test-tiny")  # text and image width 64: both mapped to the 128-d space
    learner = MUPT(clip, NAMES[:3], project_dim=128)
    assert learner.text_down.weight.shape == (128, clip.text_width)
    assert learner.vision_up.weight.shape == (clip.vision_width, 128)
    same = MUPT(clip, NAMES[:3], project_dim=clip.text_width)
    assert isinstance(same.text_down, torch.nn.Identity)  # as official: no map where the widths agree
    x = images(clip)
    loss = sum(learner.loss(x, torch.tensor([0, 2, 1])).values())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.parameters())


def test_mupt_and_mvpt_need_a_vit():
    clip = build_clip("RN50")  # random weights: only the tower type matters
    for cls in (MVPT, MUPT):
        with pytest.raises(ValueError, match="ViT"):
            cls(clip, NAMES)


# ----------------------------------------------------------------------------- source -> target
def _runner(tmp_path, options, name):
    from toy_run import FAST

    from vlprompt.engine import build_runner, load_config

    opts = {}
    for item in FAST + options:
        key, value = item.split("=", 1)
        opts[key] = None if value == "None" else int(value) if value.isdigit() else value
    cfg = load_config(ROOT / "configs/coop/toy_shapes.py", work_dir=str(tmp_path / name), options=opts)
    return build_runner(cfg)


def _mcoop_source(path):
    """What a toy MCoOp source run (the coop toy config, model.learner.type=mcoop, no ctx_init) leaves."""
    return write_learned(path, "mcoop", n_ctx=4, ctx_init="", class_token_position="end")


def test_source_prompt_starts_the_target(tmp_path):
    from vlprompt.engine.checkpoint import read_learned

    source = _mcoop_source(tmp_path / "source/learned.safetensors")
    state, meta = read_learned(source)
    assert meta["learner"]["type"] == "mcoop"
    target = ["train_dataloader.dataset.name=toy-patterns", "test_dataloader.dataset.name=toy-patterns"]
    runner = _runner(tmp_path, ["model.learner.type=mcoop", "model.learner.ctx_init=", f"load_from={source}", *target],
                     "target")
    learner = runner.model.learner
    before = learner.class_token_ids.clone()
    runner.load_or_resume()
    torch.testing.assert_close(learner.ctx.detach(), state["ctx"], rtol=0, atol=0)  # parameters equal
    # class buffers belong to the target's classes, not the source's
    assert learner.class_names[0].endswith(("circle", "square", "triangle", "star", "hexagon"))
    assert torch.equal(learner.class_token_ids, before)
    assert learner.class_names != meta["class_names"]


def test_source_of_another_family_or_backbone_stops_before_training(tmp_path):
    source = _mcoop_source(tmp_path / "src/learned.safetensors")
    with pytest.raises(CheckpointError, match=r"'mcoop' on backbone 'test-tiny'.*trains 'coop' on 'test-tiny'"):
        _runner(tmp_path, [f"load_from={source}"], "other_family")
    with pytest.raises(CheckpointError, match=r"'mcoop' on backbone 'test-tiny'.*'mcoop' on 'toy'"):
        _runner(tmp_path, ["model.learner.type=mcoop", "model.backbone.name=toy", f"load_from={source}"],
                "other_backbone")


# ------------------------------------------------------------------------------------------ configs
B2N = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft",
       "sun397", "dtd", "eurosat", "ucf101")
# composed runs (vlprompt.engine.compose): configs/mvlpt/<family>/<dataset>.py need no file
MVLPT_TARGETS = [ROOT / f"configs/mvlpt/{family}/{d}.py" for family in ("mcoop", "mupt", "mvpt") for d in B2N]


def test_mvlpt_target_configs():
    from vlprompt.engine import load_config

    for path in MVLPT_TARGETS:
        cfg = load_config(path)
        assert cfg.model.learner.type == path.parent.name, path
        assert cfg.train_dataloader.dataset.name == cfg.test_dataloader.dataset.name, path
        assert cfg.test_dataloader.dataset.name.replace("-", "_") == path.stem, path
        assert cfg.train_dataloader.dataset.subsample == "all" and cfg.train_dataloader.batch_size == 32, path
        assert cfg.optim_wrapper.optimizer.lr == 0.002 and cfg.train_cfg.max_epochs == 200, path
        assert cfg.model.backbone.name == "ViT-B-16" and cfg.load_from is None, path


def test_mvlpt_source_configs():
    from mmengine.config import Config

    from vlprompt.datasets import BASE2NOVEL_DATASETS, canonical_name

    for family in ("mcoop", "mvpt", "mupt"):
        cfg = Config.fromfile(str(ROOT / f"configs/mvlpt/{family}/source_coop11.py"))
        tasks = cfg.train_dataloader.dataset.tasks
        assert sorted(canonical_name(t) for t in tasks) == sorted(BASE2NOVEL_DATASETS)  # the 11 CoOp datasets
        assert cfg.test_dataloader.dataset.tasks == tasks and cfg.model.learner.type == family
        assert cfg.model.task_mask == "none" and cfg.model.backbone.text_checkpointing is True  # official: no mask
        toy = Config.fromfile(str(ROOT / f"configs/mvlpt/{family}/toy_source.py"))
        assert toy.model.backbone.name == "toy" and toy.model.task_mask == "zero"
        assert toy.train_dataloader.dataset.tasks == ["toy-colours", "toy-sizes", "toy-patterns"]
