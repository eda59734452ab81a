"""Test-time adapters (TPT, RLCF): the episodic loop, the selection, the losses, the views, and the
text tower's host reads.

Everything runs on the random-init 2-layer ``test-tiny`` CLIP (32 px); the numbers the official
code computes on a ViT-B/16 are compared in ``tests/adapters/test_fidelity_tta.py``.
"""

import copy
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from vlprompt.adapters import (
    ADAPTERS,
    RLCF,
    TPT,
    CLIPReward,
    NonFiniteRewardError,
    TPTViews,
    build_adapter,
    clip_scores,
    confident_views,
    default_prompt_learner,
    marginal_entropy,
    reinforce_loss,
    sample_rewards,
    uses_augmix,
    view_entropy,
)
from vlprompt.backbones import TextPrompts, TokenInsertion, build_clip
from vlprompt.errors import ConfigError
from vlprompt.learners import VPT, CoCoOp, CoOp, KgCoOp, MaPLe, PromptSRC, ZeroShotCLIP

NAMES = ["red circle", "blue star", "green square", "sea_lion", "annual crop land"]


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(7)
    return build_clip("test-tiny")


def _views(n=20, seed=1):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _state(adapter):
    """Tuned tensors and optimizer state, cloned."""
    tensors = {k: v.detach().clone() for k, v in adapter.student.state().items()}
    return tensors, copy.deepcopy(adapter.optimizer.state_dict())


def _assert_same_state(a, b):
    (ta, oa), (tb, ob) = a, b
    assert ta.keys() == tb.keys()
    assert all(torch.equal(ta[k], tb[k]) for k in ta), "tuned tensors differ"
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for k in oa["state"]:
        assert oa["state"][k].keys() == ob["state"][k].keys()
        assert all(torch.equal(torch.as_tensor(oa["state"][k][s]), torch.as_tensor(ob["state"][k][s]))
                   for s in oa["state"][k])


# ------------------------------------------------------------------------------------ episodic reset
@pytest.mark.parametrize("variant", ["prompt", "image"])
def test_episodic_reset_restores_parameters_and_optimizer_state_bit_for_bit(clip, teacher, variant):
    learner = default_prompt_learner(clip, NAMES) if variant == "prompt" else ZeroShotCLIP(clip, NAMES)
    adapter = RLCF(learner, teacher, variant=variant, lr=1e-2, selection_p=0.25)
    start = _state(adapter)
    assert start[1]["state"] == {}

    adapter.adapt(adapter.check_views(_views()))  # adapt without the reset: something really changed
    moved = _state(adapter)
    assert any(not torch.equal(start[0][k], moved[0][k]) for k in start[0])
    assert all(s["step"] == 3 for s in moved[1]["state"].values())
    adapter.reset()
    _assert_same_state(_state(adapter), start)

    out_a = adapter(_views(seed=2))
    _assert_same_state(_state(adapter), start)
    out_b = adapter(_views(seed=3))
    _assert_same_state(_state(adapter), start)
    # episodes are independent: the second sample gives what a fresh adapter gives
    fresh_learner = default_prompt_learner(clip, NAMES) if variant == "prompt" else ZeroShotCLIP(clip, NAMES)
    fresh = RLCF(fresh_learner, teacher, variant=variant, lr=1e-2, selection_p=0.25)
    assert torch.equal(fresh(_views(seed=3)), out_b)
    assert not torch.equal(out_a, out_b)


def test_non_episodic_mode_keeps_the_update(clip):
    learner = default_prompt_learner(clip, NAMES)
    start = learner.ctx.detach().clone()
    adapter = TPT(learner, episodic=False, selection_p=0.25)
    adapter(_views(seed=1))
    after_one = learner.ctx.detach().clone()
    assert not torch.equal(after_one, start)
    assert next(iter(adapter.optimizer.state.values()))["step"] == 1
    adapter(_views(seed=2))
    assert not torch.equal(learner.ctx, after_one)
    assert next(iter(adapter.optimizer.state.values()))["step"] == 2, "Adam's moments carry over the stream"
    adapter.restart()
    assert torch.equal(learner.ctx, start) and adapter.optimizer.state_dict()["state"] == {}


@pytest.mark.parametrize("kind", ["non-episodic", "momentum"])
def test_the_carried_state_lets_a_stream_go_on_where_it_stopped(clip, teacher, kind, tmp_path):
    """A state-keeping adapter saved after two samples (through a safetensors file, as tools/tta.py does) and
    loaded into a fresh one predicts the third sample as the adapter that never stopped."""
    from safetensors.torch import load_file, save_file

    def make():
        if kind == "non-episodic":
            return TPT(default_prompt_learner(clip, NAMES), episodic=False, selection_p=0.25, lr=5e-3)
        return RLCF(ZeroShotCLIP(clip, NAMES), teacher, variant="image", lr=1e-3, selection_p=0.25, momentum=0.5,
                    update_freq=1, update_w=0.5)

    stream = [_views(seed=s) for s in (1, 2, 3)]
    whole = make()
    assert whole.keeps_state
    start = whole.carried_state()
    for views in stream[:2]:
        whole(views)
    saved = whole.carried_state()
    assert any(not torch.equal(saved[k], start[k]) for k in start if saved[k].is_floating_point())
    save_file(saved, str(tmp_path / "state.safetensors"))
    expected = whole(stream[2])

    fresh = make()
    fresh.load_carried_state(load_file(str(tmp_path / "state.safetensors")))
    assert fresh.samples_seen == 2
    assert torch.allclose(fresh(stream[2]), expected, atol=1e-6)
    _assert_same_state(_state(fresh), _state(whole))
    assert all(torch.equal(v, whole.carried_state()[k]) for k, v in fresh.carried_state().items())
    assert TPT(default_prompt_learner(clip, NAMES)).carried_state() == {}  # episodic: nothing carries


def test_momentum_buffer_moves_the_reset_point(clip, teacher):
    """RLCF-S-M: with update_freq=1 the reset point after one sample is (1-w) start + w (m start + (1-m) adapted)."""
    views = _views(seed=4)
    plain = RLCF(ZeroShotCLIP(clip, NAMES), teacher, variant="image", lr=1e-3, selection_p=0.25, episodic=False)
    plain(views)
    adapted = {k: v.detach().clone() for k, v in plain.student.state().items()}
    start = plain._start

    m, w = 0.75, 0.5
    adapter = RLCF(ZeroShotCLIP(clip, NAMES), teacher, variant="image", lr=1e-3, selection_p=0.25,
                   momentum=m, update_freq=1, update_w=w)
    adapter(views)
    for k, v in adapter.student.state().items():
        if v.is_floating_point():
            expected = (1 - w) * start[k] + w * (m * start[k] + (1 - m) * adapted[k])
            assert torch.allclose(v, expected, atol=1e-7), k
    assert any(not torch.equal(adapter.student.state()[k], start[k]) for k in start)
    with pytest.raises(ValueError, match="episodic=True"):
        RLCF(ZeroShotCLIP(clip, NAMES), teacher, variant="image", momentum=0.9, episodic=False)


# ------------------------------------------------------------------------------------- batched views
def test_batched_view_features_equal_per_view_features(clip):
    learner = default_prompt_learner(clip, NAMES)
    adapter = TPT(learner, steps=0)
    views = _views(12)
    adapter.student.begin(views)
    with torch.no_grad():
        batched = adapter.student.logits(None)
        one_by_one = torch.cat([learner(v[None]) for v in views])
        rows = torch.tensor([5, 2, 9])
        assert torch.allclose(adapter.student.logits(rows), one_by_one[rows], atol=1e-5)
    adapter.student.end()
    assert torch.allclose(batched, one_by_one, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda c: default_prompt_learner(c, NAMES),
    lambda c: KgCoOp(c, NAMES),
    lambda c: CoCoOp(c, NAMES),
    lambda c: MaPLe(c, NAMES, depth=2),
    lambda c: PromptSRC(c, NAMES, text_depth=2, vision_depth=2),
], ids=["coop", "kgcoop", "cocoop", "maple", "promptsrc"])
def test_without_steps_the_adapter_predicts_what_the_learner_predicts_on_view_0(clip, make):
    learner = make(clip)
    learner.eval()
    views = _views(10)
    with torch.no_grad():
        expected = learner(views[:1])
    assert torch.allclose(TPT(learner, steps=0)(views), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["coop", "maple"])
def test_image_tower_runs_once_per_sample_unless_the_prompt_reaches_it(clip, name):
    """Text prompt tuning encodes the views once per sample; MaPLe's image prompts come from the text
    context, so its views are re-encoded at each step (the selected ones) and for the prediction."""
    learner = default_prompt_learner(clip, NAMES) if name == "coop" else MaPLe(clip, NAMES, depth=2)
    batches = []
    first_block = clip.model.visual.transformer.resblocks[0].ln_1  # run by either block path (backbone.lowrank)
    hook = first_block.register_forward_pre_hook(lambda _m, args: batches.append(args[0].shape[0]))
    try:
        TPT(learner, steps=3, selection_p=0.25)(_views(20))
    finally:
        hook.remove()
    assert batches == ([20] if name == "coop" else [20, 5, 5, 1])


# ------------------------------------------------------------------------------------------ selection
def test_selection_keeps_int_v_times_p_lowest_entropy_views():
    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.1, 5, 64)[:, None]
    picked = confident_views(logits, 0.1)
    assert len(picked) == 6  # int(64 * 0.1), as the official code truncates
    entropy = view_entropy(logits)
    assert set(picked.tolist()) == set(entropy.argsort()[:6].tolist())
    assert entropy[picked].max() < entropy[torch.tensor([i for i in range(64) if i not in picked])].min()
    assert len(confident_views(torch.randn(10, 3), 0.3)) == 3  # 10 * 0.3 = 3.0000000000000004
    assert len(confident_views(torch.randn(50, 3), 0.1)) == 5
    with pytest.raises(ValueError, match="keeps no view of 8"):
        confident_views(torch.randn(8, 3), 0.1)


def test_adapter_selects_once_and_reuses_the_selection(clip, teacher):
    """64 views: 6 selected at the first step; every later step sees those 6 only."""
    adapter = RLCF(default_prompt_learner(clip, NAMES), teacher, steps=3)
    adapter(_views(64))
    assert len(adapter.last_selected) == 6
    assert [s.shape for s in adapter.last_samples] == [(6, 3)] * 3
    assert len(adapter.last_losses) == 3


# ---------------------------------------------------------------------------------------- the losses
def test_marginal_entropy_is_the_entropy_of_the_mean_probability():
    logits = torch.randn(6, 7, generator=torch.Generator().manual_seed(3)) * 4
    p = logits.softmax(-1).mean(0)
    assert torch.allclose(marginal_entropy(logits), -(p * p.log()).sum(), atol=1e-6)
    confident = torch.tensor([[100.0, 0.0], [100.0, 0.0]])  # exp underflows to 0: still finite
    assert torch.isfinite(marginal_entropy(confident)) and marginal_entropy(confident).abs() < 1e-6


def test_rlcf_reward_baseline_and_loss_on_a_hand_made_case():
    image = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    scores = clip_scores(image, text)  # 2.5 * max(cos, 0)
    assert torch.allclose(scores, torch.tensor([[2.5, 0.0, 0.0], [1.5, 2.0, 0.0]]))
    sampled = torch.tensor([[0, 1], [1, 2]])
    rewards, base = sample_rewards(scores, sampled)
    assert torch.allclose(rewards, torch.tensor([[2.5, 0.0], [2.0, 0.0]]))
    assert torch.allclose(base, torch.tensor([[1.25], [1.0]]))  # mean over each view's own samples
    assert torch.equal(sample_rewards(scores, sampled, baseline=False)[1], torch.zeros(2, 1))

    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 1.0]], requires_grad=True)
    loss = reinforce_loss(logits, sampled, rewards - base)
    lse0, lse1 = math.log(math.exp(2) + 2), math.log(1 + 2 * math.e)
    ce = [[lse0 - 2, lse0], [lse1 - 1, lse1 - 1]]  # CE(logits_i, sampled class)
    adv = [[1.25, -1.25], [1.0, -1.0]]
    expected = sum(a * c for ra, rc in zip(adv, ce, strict=True) for a, c in zip(ra, rc, strict=True)) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()  # descent raises the log-probability of the better-rewarded sample
    assert logits.grad[0, 0] < 0 and logits.grad[0, 1] > 0 and logits.grad[1, 1] < logits.grad[1, 2]


def test_rlcf_s_combines_teachers_with_rounded_normalised_weights(clip, teacher):
    other = copy.deepcopy(teacher)
    with torch.no_grad():
        other.model.visual.proj.mul_(-1)
    reward = CLIPReward([teacher, other, clip], weights=[10, 3, 5])
    assert reward.weights == [0.56, 0.17, 0.28]  # round(w / sum, 2) as the official code; sums to 1.01
    views = _views(4)
    each = [CLIPReward(t).scores(views, NAMES) for t in (teacher, other, clip)]
    expected = 0.56 * each[0] + 0.17 * each[1] + 0.28 * each[2]
    assert torch.allclose(reward.scores(views, NAMES), expected, atol=1e-6)
    with pytest.raises(ValueError, match="no RLCF-S confidence"):
        CLIPReward([teacher, other])


def test_teacher_resizes_the_views_to_its_own_input_size(teacher):
    toy = build_clip("toy")  # 64 px
    views = _views(3)
    reward = CLIPReward(toy)
    got = reward.teachers[0].image_features(views)
    resized = torch.nn.functional.interpolate(views, size=64, mode="bicubic", align_corners=True)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(toy.encode_image(resized), dim=-1)
    assert torch.allclose(got, expected, atol=1e-6)


def test_rlcf_prompt_steps_follow_the_reference_loop(clip, teacher):
    """Selection once, teacher scores of the selected views, top-3 samples and their baseline per
    step, AdamW (lr 7e-3, wd 5e-4) on the context: written out by hand here."""
    views = _views(40, seed=5)
    learner = default_prompt_learner(clip, NAMES)
    ctx = torch.nn.Parameter(learner.ctx.detach().clone())
    ids = learner.class_token_ids
    opt = torch.optim.AdamW([ctx], lr=7e-3, weight_decay=5e-4)
    with torch.no_grad():
        image = clip.encode_image(views, normalize=True)
        t_text = torch.nn.functional.normalize(teacher.encode_text(teacher.tokenize(
            [f"a photo of a {n.replace('_', ' ')}." for n in NAMES])), dim=-1)
    losses, selected = [], None
    for _ in range(3):
        text = clip.encode_text(ids, TextPrompts(insert=[TokenInsertion(ctx, 1)]), normalize=True)
        logits = clip.logit_scale * image @ text.t()
        if selected is None:
            ent = -(logits.softmax(1) * logits.log_softmax(1)).sum(1)
            selected = ent.argsort()[: int(40 * 0.1)]
            with torch.no_grad():
                t_img = torch.nn.functional.normalize(teacher.encode_image(views[selected]), dim=-1)
        logits = logits[selected]
        top = logits.topk(3, dim=-1).indices
        r = 2.5 * (t_img[:, None, :] * t_text[top]).sum(-1).clamp(min=0)
        r = r - r.mean(1, keepdim=True)
        ce = torch.nn.functional.cross_entropy(logits.repeat_interleave(3, 0), top.flatten(), reduction="none")
        loss = (r.flatten() * ce).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        text = clip.encode_text(ids, TextPrompts(insert=[TokenInsertion(ctx, 1)]), normalize=True)
        expected = clip.logit_scale * image[:1] @ text.t()

    adapter = RLCF(learner, teacher)
    got = adapter(views)
    assert adapter.last_selected.tolist() == selected.tolist()
    assert [x.item() for x in adapter.last_losses] == pytest.approx(losses, abs=1e-6)
    assert torch.allclose(got, expected, atol=1e-5)


def test_tpt_step_follows_the_reference_loop(clip):
    views = _views(30, seed=6)
    learner = default_prompt_learner(clip, NAMES)
    ctx = torch.nn.Parameter(learner.ctx.detach().clone())
    opt = torch.optim.AdamW([ctx], lr=5e-3)  # PyTorch's default weight decay, 0.01
    with torch.no_grad():
        image = clip.encode_image(views, normalize=True)
    text = clip.encode_text(learner.class_token_ids, TextPrompts(insert=[TokenInsertion(ctx, 1)]), normalize=True)
    logits = clip.logit_scale * image @ text.t()
    selected = view_entropy(logits).argsort()[:3]
    p = logits[selected].softmax(-1).mean(0)
    loss = -(p * p.log()).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        text = clip.encode_text(learner.class_token_ids, TextPrompts(insert=[TokenInsertion(ctx, 1)]), normalize=True)
        expected = clip.logit_scale * image[:1] @ text.t()
    adapter = build_adapter("tpt", learner)
    got = adapter(views)
    assert adapter.last_selected.tolist() == selected.tolist()
    assert adapter.last_losses[0].item() == pytest.approx(loss.item(), abs=1e-6)
    assert torch.allclose(got, expected, atol=1e-5)


# ---------------------------------------------------------------------------------- image variant
@pytest.mark.parametrize("norm_only", [False, True])
def test_image_encoder_variant_never_changes_the_shared_backbone(clip, teacher, norm_only):
    before = {k: v.clone() for k, v in clip.state_dict().items()}
    learner = ZeroShotCLIP(clip, NAMES)
    adapter = RLCF(learner, teacher, variant="image", lr=1e-2, selection_p=0.25, norm_only=norm_only, episodic=False)
    copy_before = {k: v.clone() for k, v in adapter.student.visual.state_dict().items()}
    adapter(_views(seed=8))
    adapter(_views(seed=9))
    assert adapter.student.visual is not clip.model.visual
    assert all(torch.equal(before[k], v) for k, v in clip.state_dict().items()), "the shared backbone changed"
    assert all(not p.requires_grad and p.grad is None for p in clip.parameters())
    changed = {k for k, v in adapter.student.visual.state_dict().items() if not torch.equal(copy_before[k], v)}
    assert changed, "the adapter's copy of the image tower did not move"
    if norm_only:
        assert all(".ln" in f".{k}" or k.startswith("ln_") for k in changed), changed
    # the text tower is the shared one, not a copy
    assert adapter.student.clip.model.transformer is clip.model.transformer
    with torch.no_grad():  # the shared backbone still gives the learner's zero-shot logits
        assert torch.allclose(learner(_views(seed=8)[:1]), ZeroShotCLIP(clip, NAMES)(_views(seed=8)[:1]))


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("make", [lambda c: ZeroShotCLIP(c, NAMES), lambda c: VPT(c, NAMES)], ids=["zsclip", "vpt"])
def test_a_learner_without_text_context_fails_at_start_naming_it(clip, teacher, make):
    learner = make(clip)
    name = type(learner).__name__
    with pytest.raises(ValueError, match=f"TPT: the learner {name} .* no text context tokens"):
        TPT(learner)
    with pytest.raises(ValueError, match=f"RLCF: the learner {name}"):
        RLCF(learner, teacher)


def test_a_non_finite_reward_stops_naming_the_sample_and_changes_nothing(clip, teacher):
    broken = copy.deepcopy(teacher)
    with torch.no_grad():
        broken.model.visual.proj[0, 0] = float("nan")
    learner = default_prompt_learner(clip, NAMES)
    start = learner.ctx.detach().clone()
    adapter = RLCF(learner, broken, selection_p=0.25)
    with pytest.raises(NonFiniteRewardError, match="sample 17 is not finite"):
        adapter(_views(), index=17)
    assert torch.equal(learner.ctx, start)
    adapter.samples_seen = 41
    with pytest.raises(NonFiniteRewardError, match="sample 41 "):
        adapter(_views())


def test_bad_settings_and_inputs_are_named(clip, teacher):
    learner = default_prompt_learner(clip, NAMES)
    with pytest.raises(ValueError, match="variant must be 'prompt' or 'image', got 'text'"):
        TPT(learner, variant="text")
    with pytest.raises(ValueError, match="selection_p must lie in"):
        TPT(learner, selection_p=0.0)
    with pytest.raises(ValueError, match="sample_k must be"):
        RLCF(learner, teacher, sample_k=0)
    with pytest.raises(ValueError, match="sample_k=9 is more than the 5 classes"):
        RLCF(learner, teacher, sample_k=9, selection_p=0.25)(_views())
    with pytest.raises(ValueError, match=r"float \(V, 3, S, S\) tensor"):
        TPT(learner)(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="MaPLe prompts the image tower"):
        TPT(MaPLe(clip, NAMES, depth=2), variant="image")
    with pytest.raises(ValueError, match="norm_only applies to variant='image'"):
        TPT(learner, norm_only=True)


def test_build_adapter_by_name_and_config(clip, teacher):
    assert {"tpt", "rlcf"} <= set(ADAPTERS.module_dict)
    learner = default_prompt_learner(clip, NAMES)
    adapter = build_adapter({"type": "rlcf", "teacher": teacher, "steps": 5}, learner, sample_k=2)
    assert isinstance(adapter, RLCF) and adapter.steps == 5 and adapter.sample_k == 2
    assert adapter.optimizer.param_groups[0]["lr"] == 7e-3 and adapter.optimizer.param_groups[0]["weight_decay"] == 5e-4
    tpt = build_adapter("tpt", learner)
    assert (tpt.steps, tpt.optimizer.param_groups[0]["lr"], tpt.optimizer.param_groups[0]["weight_decay"]) == (
        1, 5e-3, 0.01)
    with pytest.raises(KeyError, match="not a registered adapter"):
        build_adapter("tpp", learner)
    with pytest.raises(ValueError, match="needs a 'type'"):
        build_adapter({}, learner)


def test_tpt_starts_from_a_trained_learners_own_context(clip):
    learner = CoOp(clip, NAMES, n_ctx=4, ctx_init="")
    with torch.no_grad():
        learner.ctx.normal_(generator=torch.Generator().manual_seed(0))
    trained = learner.ctx.detach().clone()
    adapter = TPT(learner, selection_p=0.25)
    adapter(_views())
    assert torch.equal(learner.ctx, trained) and torch.equal(adapter._start["ctx"], trained)


# ------------------------------------------------------------------------------------------- views
def _image(seed=0, size=(70, 50)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def test_views_are_the_original_then_seeded_random_crops(clip):
    views_of = TPTViews.for_backbone(clip, n_views=9)
    image = _image()
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    a = views_of(image, torch.Generator().manual_seed(3))
    b = views_of(image, torch.Generator().manual_seed(3))
    c = views_of(image, torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), states[0]) and (np.random.get_state()[1] == states[1]).all()
    assert random.getstate() == states[2], "the global generators are left as they were"
    assert a.shape == (9, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a[1:], c[1:])
    assert torch.allclose(a[0], clip.preprocess(image), atol=1e-6), "view 0: bicubic resize + centre crop"
    assert torch.equal(a[0], c[0])
    assert len({v.sum().item() for v in a[1:]}) == 8, "every random view differs"


def test_augmix_views_mix_the_same_crops_with_tpts_ops():
    image = _image(1, (80, 90))
    plain = TPTViews(32, 6)(image, torch.Generator().manual_seed(5))
    mixed_views = TPTViews(32, 6, augmix=True)
    mixed = mixed_views(image, torch.Generator().manual_seed(5))
    assert torch.equal(plain[0], mixed[0])
    assert not torch.equal(plain[1:], mixed[1:])
    # crops come from torch's generator, AugMix from numpy/python's: the same crops under the mix
    assert (plain[1:] - mixed[1:]).abs().mean() < (plain[1:] - plain[1:].roll(1, 0)).abs().mean()
    names = {op.name for op in mixed_views.mix.ops}
    assert names == {"AutoContrast", "Equalize", "PosterizeIncreasing", "Rotate", "SolarizeIncreasing",
                     "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
    assert all(op.magnitude == 1 for op in mixed_views.mix.ops)
    assert uses_augmix("dtd") and not uses_augmix("imagenet-a")



def test_crop_scale_bounds_the_random_crops():
    """``crop_scale=(1, 1)`` on a square image leaves only the whole image, resized, or its mirror."""
    image = _image(2, (6, 6)).resize((48, 48), Image.BILINEAR)  # smooth: the resampling filter hardly matters
    views = TPTViews(32, 7, crop_scale=(1.0, 1.0))(image, torch.Generator().manual_seed(0))
    whole = TPTViews(32, 1)(image)[0]
    def distance(view):  # mean abs difference to the whole image or its mirror (bilinear vs bicubic: ~0.01)
        return min((view - whole).abs().mean(), (view - whole.flip(-1)).abs().mean())

    assert max(distance(v) for v in views[1:]) < 0.03
    wide = TPTViews(32, 7)(image, torch.Generator().manual_seed(0))  # torchvision's (0.08, 1)
    assert max(distance(v) for v in wide[1:]) > 0.3
    for bad in [(0.0, 1.0), (0.6, 0.5), (0.5,), "big"]:
        with pytest.raises(ConfigError, match="crop_scale"):
            TPTViews(32, 4, crop_scale=bad)

# ------------------------------------------------------------------------- text tower host reads
def test_text_tower_reads_nothing_back_from_the_device_for_cpu_token_ids(clip):
    """On the meta device any read of a value (``.item()``, ``int()``, ``.tolist()``, a copy to the
    host) fails, so a text tower that runs there with CPU-cached token ids never syncs."""
    ids = clip.tokenize([f"{n}." for n in NAMES], reserve=6)
    meta = copy.deepcopy(clip).to("meta")
    ctx = torch.zeros(4, clip.text_width, device="meta", requires_grad=True)
    per_row = torch.tensor([2, 3, 2, 3, 4])  # CPU positions, e.g. after each class name
    prompts = TextPrompts(insert=[TokenInsertion(ctx, 1), TokenInsertion(ctx[:2], per_row)],
                          deep={1: torch.zeros(2, clip.text_width, device="meta")})
    out = meta.encode_text(ids, prompts, normalize=True)
    assert out.shape == (len(NAMES), clip.embed_dim) and out.device.type == "meta"
    out.sum().backward()
    assert ctx.grad.shape == ctx.shape
    # the check is real: ids that live on the device have to be read once, which fails on meta
    with pytest.raises(NotImplementedError, match="meta"):
        meta.encode_text(ids.to("meta"))


def test_token_layout_is_cached_with_the_ids_and_follows_in_place_edits(clip):
    ids = clip.tokenize(["a b.", "a b c d e f g."]).clone()
    ctx = torch.randn(3, clip.text_width)
    prompts = TextPrompts(insert=[TokenInsertion(ctx, 1)])
    with torch.no_grad():
        first = clip.encode_text(ids, prompts)
        assert torch.equal(clip.encode_text(ids, prompts), first)
        ids[0] = clip.tokenize(["a b c d e f g h i j."])[0]  # in place: the cached lengths must not be used
        again = clip.encode_text(ids, prompts)
        fresh = clip.encode_text(ids.clone(), prompts)
    assert torch.equal(again, fresh) and not torch.allclose(again[0], first[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_text_tower_makes_no_device_sync_on_a_gpu():
    gpu = build_clip("test-tiny", device="cuda")
    ids = gpu.tokenize([f"{n}." for n in NAMES], reserve=4)
    ctx = torch.zeros(4, gpu.text_width, device="cuda", requires_grad=True)
    gpu.encode_text(ids, TextPrompts(insert=[TokenInsertion(ctx, 1)]))  # warm-up
    torch.cuda.set_sync_debug_mode("error")
    try:
        gpu.encode_text(ids, TextPrompts(insert=[TokenInsertion(ctx, 1)]), normalize=True).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_image_variant_first_step_paths_agree(clip, teacher):
    """Towers with BatchNorm back-propagate the first step through the all-view batch (batch statistics
    depend on it); others score all views without autograd and re-encode the selected ones. On a ViT,
    which has no BatchNorm, both paths must give the same update."""
    results = []
    for batch_statistics in (False, True):
        adapter = RLCF(ZeroShotCLIP(clip, NAMES), teacher, variant="image", lr=1e-3, selection_p=0.25, episodic=False)
        adapter.student._batch_statistics = batch_statistics
        batches = []
        first_block = adapter.student.visual.transformer.resblocks[0].ln_1  # run by either block path
        first_block.register_forward_pre_hook(lambda _m, args, b=batches: b.append(args[0].shape[0]))
        out = adapter(_views(seed=10))
        results.append((out, {k: v.detach().clone() for k, v in adapter.student.state().items()}, batches))
    (out_a, state_a, batches_a), (out_b, state_b, batches_b) = results
    assert batches_a == [20, 5, 5, 5, 1] and batches_b == [20, 5, 5, 1]
    assert torch.allclose(out_a, out_b, atol=1e-5)
    assert all(torch.allclose(state_a[k], state_b[k], atol=1e-6) for k in state_a)
