"""MaPLe, IVLP, PromptSRC, VPT and Gaussian prompt aggregation on tiny random CLIPs.

What the published numbers cannot show on their own (tests/learners/test_fidelity.py compares with the
official code): where the prompts go, that MaPLe's text prompts learn through both towers, the
regularisers' formulas, that the frozen features come from the one shared backbone, class-set
switches, and the GPA hook's weights, aggregation and resumability.
"""

import logging
import math
import uuid
from types import SimpleNamespace

import open_clip
import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT
from mmengine.hooks import Hook
from tool_loader import load_tool

from vlprompt.backbones import ImagePrompts, PromptableCLIP, build_clip
from vlprompt.datasets import IMAGENET_TEMPLATES
from vlprompt.engine.checkpoint import read_learned
from vlprompt.learners import IVLP, VPT, MaPLe, PromptSRC
from vlprompt.learners.promptsrc.gpa import GaussianPromptAggregation, gpa_weights
from vlprompt.zeroshot import class_text_features

NAMES = ["dog", "golden retriever", "annual crop land"]
NOVEL = ["cat", "red fox", "snow mountain", "pizza"]


@pytest.fixture(scope="module")
def clip4():
    """4-layer towers, random weights (the toy architecture), for depth semantics."""
    torch.manual_seed(0)
    return build_clip("toy")


def _images(clip, n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, clip.image_size, clip.image_size, generator=g), torch.arange(n) % len(NAMES)


# ---------------------------------------------------------------------------------------- MaPLe
def test_maple_layout_follows_the_published_design(clip4):
    torch.manual_seed(0)
    learner = MaPLe(clip4, NAMES, depth=9)  # capped at the 4 layers of each tower
    d, v = clip4.text_width, clip4.vision_width
    assert learner.depth == 4
    shapes = {k: tuple(p.shape) for k, p in learner.named_parameters()}
    assert shapes == {
        "ctx": (2, d), **{f"text_deep.{i}": (2, d) for i in (1, 2, 3)},
        **{f"proj.{i}.weight": (v, d) for i in range(4)}, **{f"proj.{i}.bias": (v,) for i in range(4)},
    }
    # the context starts as "a photo" and the prompt keeps "of a": [SOS] ctx ctx of a dog . [EOS]
    words = clip4.tokenizer.encode("a photo of a")
    assert torch.equal(learner.ctx.detach(), clip4.embed_tokens(torch.tensor(words[:2])))
    ids = learner.class_token_ids[0]
    assert ids[ids > 0].tolist() == [clip4.tokenizer.sot_token_id, *words[2:], *clip4.tokenizer.encode("dog."),
                                     clip4.tokenizer.eot_token_id]
    # the deep couplings start as copies of one layer (as published); F_0 has its own init
    for i in (2, 3):
        assert torch.equal(learner.proj[str(i)].weight, learner.proj["1"].weight)
    assert not torch.equal(learner.proj["0"].weight, learner.proj["1"].weight)
    # the image prompts are the couplings applied to the text prompts, layers 1..3 deep
    prompts = learner.image_prompts()
    assert torch.equal(prompts.tokens, learner.proj["0"](learner.ctx))
    assert sorted(prompts.deep) == [1, 2, 3]
    assert torch.equal(prompts.deep[2], learner.proj["2"](learner.text_deep["2"]))
    assert sorted(learner.text_prompts().deep) == [1, 2, 3]
    images, _ = _images(clip4)
    assert learner.encode_images(images).shape == (4, clip4.embed_dim)
    assert learner.encode_classes().shape == (3, clip4.embed_dim)


def test_maple_text_prompts_learn_through_both_towers(clip):
    torch.manual_seed(1)
    learner = MaPLe(clip, NAMES)
    images, labels = _images(clip)
    learner.train()

    def grads(couple: bool) -> dict[str, torch.Tensor]:
        learner.zero_grad()
        if couple:
            loss = learner.loss(images, labels)["loss_ce"]
        else:  # the image prompts from detached text prompts: only the text tower's gradient
            ctx, deep = learner.ctx.detach(), {k: p.detach() for k, p in learner.text_deep.items()}
            image_prompts = ImagePrompts(tokens=learner.proj["0"](ctx),
                                         deep={int(k): learner.proj[k](p) for k, p in deep.items()})
            feats = clip.encode_image(images, image_prompts, normalize=True)
            loss = F.cross_entropy(learner.logits(feats, learner.encode_classes()), labels)
        loss.backward()
        return {k: p.grad.clone() for k, p in learner.named_parameters() if k.startswith(("ctx", "text_deep"))}

    both, text_only = grads(True), grads(False)
    for k in both:
        assert both[k].abs().sum() > 0, k
        assert (both[k] - text_only[k]).abs().max() > 1e-6, f"{k}: no gradient through the image tower"
    # through the image tower alone: the text prompts get a gradient from image features only
    learner.zero_grad()
    learner.encode_images(images).sum().backward()
    assert learner.ctx.grad.abs().sum() > 0 and learner.text_deep["1"].grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.parameters())


# ----------------------------------------------------------------------------------------- IVLP
def test_ivlp_prompts_are_independent_and_counted_per_layer(clip4):
    torch.manual_seed(2)
    learner = IVLP(clip4, NAMES, n_ctx_text=3, n_ctx_vision=5, text_depth=3, vision_depth=2)
    d, v = clip4.text_width, clip4.vision_width
    shapes = {k: tuple(p.shape) for k, p in learner.named_parameters()}
    assert shapes == {"ctx": (3, d), "text_deep.1": (3, d), "text_deep.2": (3, d), "vision_ctx": (5, v),
                      "vision_deep.1": (5, v)}
    # 3 of the 4 phrase tokens are learned, "a" stays: [SOS] ctx ctx ctx a dog . [EOS]
    ids = learner.class_token_ids[0]
    assert ids[ids > 0].tolist()[:3] == [clip4.tokenizer.sot_token_id, *clip4.tokenizer.encode("a dog")[:2]]
    # published size: depth 9 in each tower of a 12-layer ViT-B/16 -> 9 x 4 x (512 + 768) = 46,080
    full = IVLP(clip4, NAMES)  # depth 9 capped at 4 layers
    assert sum(p.numel() for p in full.parameters()) == 4 * 4 * (d + v)
    # the image tower only sees image prompts: the text prompts get no gradient from it
    images, _ = _images(clip4)
    learner.encode_images(images).sum().backward()
    assert learner.ctx.grad is None and learner.vision_ctx.grad.abs().sum() > 0
    # language-only IVLP: no image prompts, the image features are the frozen ones
    text_only = IVLP(clip4, NAMES, vision_depth=0)
    assert not any(k.startswith("vision") for k, _ in text_only.named_parameters())
    with torch.no_grad():
        assert torch.equal(text_only.encode_images(images), clip4.encode_image(images, normalize=True))
    with pytest.raises(ValueError, match="text_depth"):
        IVLP(clip4, NAMES, text_depth=0)
    with pytest.raises(ValueError, match="tokens"):
        IVLP(clip4, NAMES, n_ctx_text=5, ctx_init="a photo of a")


def test_ivlp_deep_prompts_enter_their_layer(clip4):
    torch.manual_seed(3)
    learner = IVLP(clip4, NAMES, text_depth=2, vision_depth=2)
    images, _ = _images(clip4)
    with torch.no_grad():
        base_t, base_i = learner.encode_classes(), learner.encode_images(images)
        learner.text_deep["1"].add_(torch.randn_like(learner.text_deep["1"]))  # (a constant shift: LayerNorm
        learner.vision_deep["1"].add_(torch.randn_like(learner.vision_deep["1"]))  # would remove it)
        assert (learner.encode_classes() - base_t).abs().max() > 1e-4
        assert (learner.encode_images(images) - base_i).abs().max() > 1e-4


# ------------------------------------------------------------------------------------ PromptSRC
def _raw_template_mean(clip, names, templates):
    ids = clip.tokenize([t.replace("{}", n) for n in names for t in templates])
    with torch.no_grad():
        feats = clip.model.encode_text(ids)  # open_clip's own text tower, unprompted
    return feats.reshape(len(names), len(templates), -1).mean(1)


def test_promptsrc_regularisers_follow_the_published_formulas(clip):
    torch.manual_seed(4)
    learner = PromptSRC(clip, NAMES)
    assert learner.templates == list(IMAGENET_TEMPLATES) and len(learner.templates) == 60
    assert learner.text_targets_raw.numel() == 0, "the targets are not computed before training needs them"
    with torch.no_grad():
        for p in learner.parameters():
            p.add_(0.3 * torch.randn_like(p))  # away from the init, so every term is sizeable
    images, labels = _images(clip)
    learner.train()
    losses = learner.loss(images, labels)
    assert set(losses) == {"loss_ce", "loss_scl_text", "loss_scl_image", "loss_scl_logits"}

    with torch.no_grad():
        raw = _raw_template_mean(clip, NAMES, IMAGENET_TEMPLATES)
        assert (learner.text_targets_raw - raw).abs().max() < 1e-5  # the mean of the RAW features
        targets = F.normalize(raw, dim=-1)
        text = learner.encode_classes()
        image = learner.encode_images(images)
        logits = clip.logit_scale * image @ text.t()
        zs_image = F.normalize(clip.model.encode_image(images), dim=-1)
        zs_logits = clip.logit_scale * zs_image @ targets.t()
        p_zs, log_p = zs_logits.softmax(-1), logits.log_softmax(-1)
        kl = (p_zs * (p_zs.log() - log_p)).sum() / logits.numel()  # KL(p_zs || p) / (B * C)
    expected = {
        "loss_ce": F.cross_entropy(logits, labels),
        "loss_scl_text": 25 * (text - targets).abs().mean(),
        "loss_scl_image": 10 * (image - zs_image).abs().mean(),
        "loss_scl_logits": kl,
    }
    for k, v in expected.items():
        assert v.item() > 1e-4, k
        assert losses[k].item() == pytest.approx(v.item(), rel=1e-4), k
    # the weights scale their terms, and each term has a gradient
    plain = PromptSRC(clip, NAMES, text_loss_weight=1, image_loss_weight=1, logits_loss_weight=2)
    plain.load_state_dict(learner.state_dict())
    plain.train()
    other = plain.loss(images, labels)
    assert other["loss_scl_text"].item() == pytest.approx(losses["loss_scl_text"].item() / 25, rel=1e-5)
    assert other["loss_scl_image"].item() == pytest.approx(losses["loss_scl_image"].item() / 10, rel=1e-5)
    assert other["loss_scl_logits"].item() == pytest.approx(2 * losses["loss_scl_logits"].item(), rel=1e-5)
    for k in ("loss_scl_text", "loss_scl_image", "loss_scl_logits"):
        learner.zero_grad()
        losses = learner.loss(images, labels)
        losses[k].backward()
        assert learner.ctx.grad is not None or k == "loss_scl_image"
        assert learner.vision_ctx.grad is not None or k == "loss_scl_text"


def test_promptsrc_frozen_features_come_from_the_shared_backbone(clip, monkeypatch):
    learner = PromptSRC(clip, NAMES)
    # no second CLIP (or tower) inside the learner: its only parameters are the prompts
    assert not any(isinstance(m, (PromptableCLIP, open_clip.CLIP, open_clip.transformer.VisionTransformer))
                   for m in learner.modules())
    d, v = clip.text_width, clip.vision_width
    depth = clip.text_layers  # 9 capped at 2
    assert sum(p.numel() for p in learner.parameters()) == depth * 4 * (d + v)
    calls = []
    encode = clip.encode_image
    monkeypatch.setattr(clip, "encode_image", lambda x, prompts=None, normalize=False: (
        calls.append(prompts is None) or encode(x, prompts, normalize)))
    images, labels = _images(clip)
    learner.train()
    learner.loss(images, labels)
    assert sorted(calls) == [False, True], "one prompted and one unprompted pass of the same backbone"


def test_promptsrc_targets_follow_the_class_set(clip, monkeypatch):
    learner = PromptSRC(clip, NAMES, templates=["a photo of a {}.", "a sketch of a {}."])
    images, labels = _images(clip)
    learner.train()
    learner.loss(images, labels)
    first = learner.text_targets_raw.clone()
    assert first.shape == (3, clip.embed_dim)
    computed = []
    from vlprompt.learners.promptsrc import learner as module

    ensemble = module.template_ensemble
    monkeypatch.setattr(module, "template_ensemble", lambda *a, **k: computed.append(a[1]) or ensemble(*a, **k))
    learner.loss(images, labels)
    assert computed == []  # cached for the class set
    # evaluation on novel classes needs no targets
    learner.eval()
    learner.set_classes(NOVEL)
    with torch.no_grad():
        assert learner(images).shape == (4, len(NOVEL))
    assert computed == []
    # training on another class set recomputes them
    learner.train()
    learner.loss(images, labels % len(NOVEL))
    assert computed == [NOVEL] and learner.text_targets_raw.shape == (4, clip.embed_dim)
    expected = _raw_template_mean(clip, NOVEL, learner.templates)
    assert (learner.text_targets_raw - expected).abs().max() < 1e-5
    assert learner.hparams()["templates"] == ["a photo of a {}.", "a sketch of a {}."]
    assert PromptSRC(clip, NAMES).hparams()["templates"] is None  # the default stays compact in checkpoints


# ------------------------------------------------------------------------------------------ VPT
def test_vpt_learns_image_prompts_against_fixed_class_prompts(clip4):
    torch.manual_seed(5)
    learner = VPT(clip4, NAMES)  # 8 tokens, depth 12 capped at 4
    v = clip4.vision_width
    assert {k: tuple(p.shape) for k, p in learner.named_parameters()} == {
        "vision_ctx": (8, v), **{f"vision_deep.{i}": (8, v) for i in (1, 2, 3)}}
    assert torch.allclose(learner.encode_classes(), class_text_features(clip4, NAMES, "a photo of a {}."))
    learner.set_classes(NOVEL)
    assert torch.allclose(learner.encode_classes(), class_text_features(clip4, NOVEL, "a photo of a {}."))
    images, _ = _images(clip4)
    with torch.no_grad():
        prompted = learner.encode_images(images)
    assert (prompted - clip4.encode_image(images, normalize=True)).abs().max() > 1e-4


# ---------------------------------------------------------------------------------------- autocast
@pytest.mark.parametrize("cls", [MaPLe, IVLP, PromptSRC, VPT])
def test_learners_train_under_autocast_with_fp32_parameters(cls, clip):
    torch.manual_seed(6)
    learner = cls(clip, NAMES)
    images, labels = _images(clip)
    learner.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = learner.loss(images, labels)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for k, p in learner.named_parameters():
        assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32, k


# ---------------------------------------------------------------------------------------------- GPA
def test_gpa_weights_are_a_normalised_discrete_gaussian():
    w = gpa_weights(20, 15, 1)
    assert sum(w) == pytest.approx(1.0)
    assert max(range(20), key=w.__getitem__) == 14  # epoch 15
    density = [math.exp(-0.5 * (t - 15) ** 2) for t in range(1, 21)]
    assert w == pytest.approx([x / sum(density) for x in density])
    # the published base-to-novel weights: ~0.40 at epoch 15, ~0.24 at 14 and 16, ~0.05 at 13 and 17
    assert (round(w[14], 2), round(w[13], 2), round(w[15], 2), round(w[12], 2)) == (0.40, 0.24, 0.24, 0.05)
    assert gpa_weights(3, 2, 1e9) == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError):
        gpa_weights(3, 2, 0)
    with pytest.raises(ValueError, match="no weight"):
        gpa_weights(3, 1e6, 1)


class _Runner(SimpleNamespace):
    """What the hook reads from an mmengine Runner."""

    def __init__(self, learner, max_epochs, resume=False):
        super().__init__(model=SimpleNamespace(learner=learner), epoch=0, max_epochs=max_epochs,
                         logger=logging.getLogger("test"), _resume=resume)


def _epoch(hook, runner, learner, value):
    with torch.no_grad():
        for p in learner.parameters():
            p.fill_(value)
    hook.after_train_epoch(runner)
    runner.epoch += 1


def test_gpa_hook_aggregates_the_learned_parameters_of_every_epoch(clip):
    learner = IVLP(clip, NAMES)
    runner = _Runner(learner, max_epochs=3)
    hook = GaussianPromptAggregation(mean=2, std=1)
    hook.before_train(runner)
    w = gpa_weights(3, 2, 1)
    for t in (1, 2, 3):  # the parameters hold t at the end of epoch t
        _epoch(hook, runner, learner, float(t))
    expected = sum(wt * t for wt, t in zip(w, (1, 2, 3), strict=True))
    for k, p in learner.named_parameters():
        assert torch.allclose(p, torch.full_like(p, expected)), k
    assert hook.epochs == [1, 2, 3]


def test_gpa_hook_resumes_from_its_checkpointed_sum(clip):
    values = (0.5, -1.0, 2.0, 4.0)
    straight = IVLP(clip, NAMES)
    runner = _Runner(straight, max_epochs=4)
    hook = GaussianPromptAggregation(mean=3, std=1.5)
    hook.before_train(runner)
    for v in values:
        _epoch(hook, runner, straight, v)

    first = IVLP(clip, NAMES)
    runner = _Runner(first, max_epochs=4)
    hook = GaussianPromptAggregation(mean=3, std=1.5)
    hook.before_train(runner)
    for v in values[:2]:
        _epoch(hook, runner, first, v)
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)
    assert set(checkpoint["gpa"]) == {"mean", "std", "epochs", "sum"}
    assert all(isinstance(t, torch.Tensor) for t in checkpoint["gpa"]["sum"].values())
    saved = torch.load(_roundtrip(checkpoint), weights_only=True)  # plain data: loads with weights_only

    resumed = IVLP(clip, NAMES)
    runner = _Runner(resumed, max_epochs=4, resume=True)
    hook = GaussianPromptAggregation(mean=3, std=1.5)
    hook.after_load_checkpoint(runner, saved)
    runner.epoch = 2
    hook.before_train(runner)
    for v in values[2:]:
        _epoch(hook, runner, resumed, v)
    for k, p in resumed.named_parameters():
        assert torch.equal(p, dict(straight.named_parameters())[k]), k

    # a checkpoint without the aggregate (or with other settings) cannot be resumed silently
    runner = _Runner(IVLP(clip, NAMES), max_epochs=4, resume=True)
    hook = GaussianPromptAggregation(mean=3, std=1.5)
    hook.after_load_checkpoint(runner, {})
    runner.epoch = 2
    with pytest.raises(RuntimeError, match="aggregate"):
        hook.before_train(runner)
    with pytest.raises(RuntimeError, match="mean"):
        GaussianPromptAggregation(mean=15, std=1).after_load_checkpoint(runner, saved)


def _roundtrip(obj):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


# ------------------------------------------------------------------------------------ end to end
train_tool = load_tool("train")  # tools/train.py, by its file
FAST = ["model.backbone.name=test-tiny", "model.backbone.pretrained=None", "train_dataloader.dataset.num_shots=2",
        "train_dataloader.batch_size=8", "default_hooks.logger.interval=1"]


class _Record(Hook):
    """The learned parameters at the end of every epoch, before the aggregation touches them."""

    priority = "HIGHEST"

    def __init__(self):
        self.states = []

    def after_train_epoch(self, runner):
        self.states.append({k: v.clone() for k, v in runner.model.learner.learned_state_dict().items()})


class _Stop(Exception):
    pass


class _StopAfter(Hook):
    priority = "LOWEST"  # after the epoch's checkpoint

    def __init__(self, epochs):
        self.epochs = epochs

    def after_train_epoch(self, runner):
        if runner.epoch + 1 >= self.epochs:
            raise _Stop


import vlprompt.engine as engine  # noqa: E402  (tools/train.py takes build_runner from here when main() runs)

BUILD_RUNNER = engine.build_runner


def _run(work_dir, epochs, monkeypatch, hooks=(), resume=False):
    """tools/train.py on the toy PromptSRC config (tiny backbone, 2 shots, GPA mean 2, std 1)."""

    def build(cfg, launcher="none"):
        runner = BUILD_RUNNER(cfg, launcher)
        for hook in hooks:
            runner.register_hook(hook)
        return runner

    monkeypatch.setattr(engine, "build_runner", build)
    argv = [str(ROOT / "configs/promptsrc/toy_shapes.py"), "--work-dir", str(work_dir), "--no-test",
            "--cfg-options", *FAST, f"train_cfg.max_epochs={epochs}", "custom_hooks.0.mean=2",
            "custom_hooks.0.std=1", f"experiment_name=gpa_{uuid.uuid4().hex[:8]}"]
    train_tool.main(argv + (["--resume"] if resume else []))


def test_promptsrc_run_saves_and_resumes_the_gaussian_aggregate(tmp_path, monkeypatch):
    record = _Record()
    _run(tmp_path / "straight", 3, monkeypatch, [record])
    learned, meta = read_learned(tmp_path / "straight/learned.safetensors")
    assert meta["learner"]["type"] == "promptsrc"
    w = gpa_weights(3, 2, 1)
    assert len(record.states) == 3
    for k, v in learned.items():
        expected = sum(wt * s[k] for wt, s in zip(w, record.states, strict=True))
        assert torch.allclose(v, expected, atol=1e-7), k
        assert not torch.allclose(v, record.states[-1][k]), k  # not simply the last epoch
    # the last epoch's checkpoint holds the aggregate too (what the published code saves and tests)
    assert all(torch.equal(v, read_learned(tmp_path / "straight/epoch_3.pth")[0][k]) for k, v in learned.items())

    # stopped after epoch 2 and resumed: the same aggregate
    with pytest.raises(_Stop):
        _run(tmp_path / "stopped", 3, monkeypatch, [_StopAfter(2)])
    _run(tmp_path / "stopped", 3, monkeypatch, resume=True)
    resumed, _ = read_learned(tmp_path / "stopped/learned.safetensors")
    for k, v in learned.items():
        assert torch.equal(resumed[k], v), k


# ------------------------------------------------------------------------------------------ configs
def _cfg(rel):
    from vlprompt.engine import load_config

    return load_config(ROOT / "configs" / rel)  # a file, or a run composed from the method and the dataset


B2N = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft",
       "sun397", "dtd", "eurosat", "ucf101")


@pytest.mark.parametrize("path", [ROOT / f"configs/promptsrc/few_shot/{d}.py" for d in B2N], ids=lambda p: p.stem)
def test_promptsrc_few_shot_configs_use_the_published_per_dataset_gpa(path):
    cfg = _cfg(f"promptsrc/few_shot/{path.name}")
    group_45_5 = {"stanford_cars", "oxford_flowers", "fgvc_aircraft", "dtd", "eurosat"}
    (hook,) = cfg.custom_hooks
    assert (hook.mean, hook.std) == ((45, 5) if path.stem in group_45_5 else (30, 30))
    assert cfg.train_cfg.max_epochs == 50 and cfg.train_dataloader.batch_size == 4
    assert cfg.optim_wrapper.optimizer.lr == 0.0025
    assert cfg.train_dataloader.dataset.subsample == cfg.test_dataloader.dataset.subsample == "all"
    assert cfg.test_dataloader.dataset.name.replace("-", "_") == path.stem
    assert (cfg.model.learner.text_depth, cfg.model.learner.vision_depth) == (9, 9)


def test_published_recipes_in_the_configs():
    maple, maple_xd = _cfg("maple/dtd.py"), _cfg("maple/imagenet_xd.py")
    assert (maple.model.learner.depth, maple.optim_wrapper.optimizer.lr, maple.train_cfg.max_epochs) == (9, 0.0035, 5)
    assert (maple_xd.model.learner.depth, maple_xd.optim_wrapper.optimizer.lr, maple_xd.train_cfg.max_epochs) == (
        3, 0.0026, 2)
    src, src_xd = _cfg("promptsrc/imagenet.py"), _cfg("promptsrc/imagenet_xd.py")
    assert (src.custom_hooks[0].mean, src.custom_hooks[0].std, src.train_cfg.max_epochs) == (15, 1, 20)
    assert (src_xd.custom_hooks[0].mean, src_xd.custom_hooks[0].std, src_xd.train_cfg.max_epochs) == (6, 10, 20)
    assert (src_xd.model.learner.text_depth, src_xd.model.learner.vision_depth) == (3, 3)
    for cfg in (maple_xd, src_xd, _cfg("ivlp/imagenet_xd.py"), _cfg("vpt/imagenet_xd.py")):
        assert cfg.train_dataloader.dataset.subsample == "all" and cfg.train_dataloader.dataset.name == "imagenet"
    ivlp, vpt = _cfg("ivlp/eurosat.py"), _cfg("vpt/eurosat.py")
    assert (ivlp.optim_wrapper.optimizer.lr, ivlp.train_cfg.max_epochs, ivlp.train_dataloader.batch_size) == (
        0.0025, 20, 4)
    assert not ivlp.get("custom_hooks")
    assert (vpt.model.learner.n_ctx, vpt.model.learner.depth, vpt.optim_wrapper.optimizer.lr) == (8, 12, 0.0025)


def test_cross_dataset_recipes_follow_the_published_scripts():
    """IVLP: the MaPLe repository's xd_train_ivlp.sh (IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml, 16 shots);
    KgCoOp: its xd_train.sh (4 shots, all classes)."""
    ivlp = _cfg("ivlp/imagenet_xd.py")
    learner = ivlp.model.learner
    assert (learner.n_ctx_text, learner.n_ctx_vision, learner.text_depth, learner.vision_depth) == (2, 2, 12, 12)
    assert learner.ctx_init == "a photo of a"
    assert (ivlp.optim_wrapper.optimizer.lr, ivlp.train_cfg.max_epochs, ivlp.train_dataloader.batch_size) == (
        0.0035, 5, 4)
    assert ivlp.train_dataloader.dataset.num_shots == ivlp.protocol.num_shots == 16
    kg = _cfg("kgcoop/imagenet_xd.py")
    assert kg.train_dataloader.dataset.num_shots == kg.protocol.num_shots == 4
    assert kg.train_dataloader.dataset.subsample == "all" and kg.train_dataloader.dataset.name == "imagenet"
    assert (kg.model.learner.n_ctx, kg.model.learner.w, kg.optim_wrapper.optimizer.lr) == (4, 8.0, 0.002)
    assert (kg.train_cfg.max_epochs, kg.train_dataloader.batch_size) == (100, 128)


def test_image_prompting_learners_refuse_a_resnet_backbone_by_name():
    from vlprompt.backbones import build_clip
    from vlprompt.learners import build_learner

    torch.manual_seed(0)
    rn50 = build_clip("RN50")
    for name, kwargs in (("maple", {}), ("vpt", {}), ("ivlp", {}), ("promptsrc", {})):
        with pytest.raises(ValueError, match=r"prompts the image tower, which needs a ViT; RN50 has none"):
            build_learner(name, rn50, ["dog", "cat"], **kwargs)
    # IVLP without image prompts works on a ResNet (text prompts only)
    assert build_learner("ivlp", rn50, ["dog", "cat"], vision_depth=0).class_names == ["dog", "cat"]
