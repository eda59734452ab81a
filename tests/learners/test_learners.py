"""Prompt learners: contract checks for every registered learner, then method-specific semantics.

The contract tests are parametrized over the registry, so a new learner gets them for free:
training changes only its own parameters, the backbone stays bit-identical, eval caches class
features, class sets can change, and checkpoints and hyper-parameters rebuild the same learner.
"""

import os
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vlprompt.backbones import TextPrompts, TokenInsertion, build_clip
from vlprompt.datasets.templates import get_template
from vlprompt.learners import CoCoOp, CoOp, KgCoOp, list_learners
from vlprompt.learners import build_learner as _build_learner

NAMES = ["dog", "golden retriever", "annual crop land"]
NEW_NAMES = ["cat", "red fox", "snow mountain", "pizza"]
#: settings a learner needs beyond backbone and class names: KAPT's class descriptions (inline), for every
#: class set used below (split-file spellings are matched ignoring case and underscores)
_DESCRIBED = {
    "dog": "A domesticated carnivorous mammal that barks.", "golden retriever": "A dog breed with a golden coat.",
    "annual crop land": "Fields sown and harvested every year.", "cat": "A small furry pet that purrs.",
    "red fox": "A wild canine with orange fur and a bushy tail.", "snow mountain": "A high peak covered in snow.",
    "pizza": "A flat baked dough topped with tomato and cheese.", "american bulldog": "A muscular dog breed.",
    "apply eye makeup": "A person painting around the eyes.",
}



def _teacher_weights() -> str:
    """A seeded tiny CLIP's weights in a file (made once): PromptKD's teacher must be the same at every build."""
    path = Path(tempfile.gettempdir()) / f"vlprompt_test_teacher_{os.getpid()}.pt"
    if not path.is_file():
        torch.manual_seed(2)
        torch.save(build_clip("test-tiny").model.state_dict(), path)
    return str(path)


LEARNER_KWARGS = {"kapt": {"knowledge": {"descriptions": _DESCRIBED}},
                  "promptkd": {"teacher": {"name": "test-tiny", "pretrained": _teacher_weights(), "quick_gelu": True}}}
#: learners that learn from unlabelled images (no cross-entropy term)
UNSUPERVISED = {"promptkd"}


class _OneBatch:
    """The run's data (vlprompt.learners.base.RunData) as one seeded batch: training set and tuning split."""

    def __init__(self, clip, names):
        g = torch.Generator().manual_seed(7)
        self.images = torch.randn(2 * len(names), 3, clip.image_size, clip.image_size, generator=g)
        self.labels = torch.arange(2 * len(names)) % len(names)

    def train_batches(self):
        return iter([(self.images, self.labels)])

    def tune_batches(self):
        return iter([(self.images, self.labels)])


def build_learner(name, clip, names, **kw):
    """The registry's builder with the settings the learner needs (LEARNER_KWARGS) filled in, and what it reads
    before training given to it (Tip-Adapter fills its cache), as the engine's LearnerDataHook does."""
    learner = _build_learner(name, clip, names, **{**LEARNER_KWARGS.get(name, {}), **kw})
    with torch.no_grad():
        learner.before_training(_OneBatch(clip, names))
    return learner


@pytest.fixture
def clip():
    """A fresh random-init tiny CLIP per test, so a test that broke it cannot hide in another."""
    torch.manual_seed(0)
    return build_clip("test-tiny")


def _batch(clip, n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, clip.image_size, clip.image_size, generator=g)
    labels = torch.arange(n) % len(NAMES)
    return images, labels


def _train(learner, images, labels, steps=3, lr=0.5):
    """A few plain SGD steps on the learner's parameters; returns the last loss terms."""
    learner.train()
    params = [p for p in learner.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr) if params else None
    for _ in range(steps):
        losses = learner.loss(images, labels)
        total = sum(losses.values())
        assert torch.isfinite(total), losses
        if opt is not None:
            opt.zero_grad()
            total.backward()
            opt.step()
    return losses


def _eval_logits(learner, images):
    learner.eval()
    with torch.no_grad():
        return learner(images)


# ---------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", list_learners())
def test_training_changes_only_the_learners_parameters(name, clip):
    before = {k: v.clone() for k, v in clip.state_dict().items()}
    torch.manual_seed(0)
    learner = build_learner(name, clip, NAMES)
    own = {k: v.detach().clone() for k, v in learner.named_parameters()}
    assert not any(k.startswith(("model.", "_backbone")) for k in learner.state_dict()), "backbone in state"
    trainable = {k for k, p in learner.named_parameters() if p.requires_grad}
    # what training changes, and state the data set (Tip-Adapter's cache values): no frozen parameter
    assert trainable <= set(learner.learned_state_dict()) <= trainable | {k for k, _ in learner.named_buffers()}
    images, labels = _batch(clip)
    losses = _train(learner, images, labels)
    assert ("loss_ce" in losses or name in UNSUPERVISED) and all(v.dim() == 0 for v in losses.values())
    for k, p in learner.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p.detach(), own[k]), f"{k} did not change"
        else:
            assert torch.equal(p.detach(), own[k]), f"frozen {k} changed"
    after = clip.state_dict()
    assert set(after) == set(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), f"backbone tensor {k} changed"
    assert all(p.grad is None and not p.requires_grad for p in clip.parameters())
    assert not clip.model.training, "the frozen backbone must stay in eval mode"


@pytest.mark.parametrize("name", list_learners())
def test_eval_caches_class_features_unless_image_conditioned(name, clip, monkeypatch):
    learner = build_learner(name, clip, NAMES)
    images, _ = _batch(clip)
    calls = []
    encode = learner.encode_classes
    monkeypatch.setattr(learner, "encode_classes", lambda *a, **k: calls.append(1) or encode(*a, **k))
    learner.eval()
    with torch.no_grad():
        first = learner(images)
        second = learner(images)
    assert first.shape == (len(images), len(NAMES))
    assert torch.equal(first, second)
    assert len(calls) == (2 if learner.image_conditioned_text else 1)
    learner.train()  # leaving eval drops the cache: training must see fresh features
    learner.eval()
    with torch.no_grad():
        learner(images)
    assert len(calls) == (3 if learner.image_conditioned_text else 2)


@pytest.mark.parametrize("name", list_learners())
def test_set_classes_keeps_learned_parameters(name, clip):
    torch.manual_seed(0)
    learner = build_learner(name, clip, NAMES)
    images, labels = _batch(clip)
    _train(learner, images, labels, steps=1)
    learned = {k: v.clone() for k, v in learner.learned_state_dict().items()}
    old_logits = _eval_logits(learner, images)
    learner.set_classes(NEW_NAMES)
    assert learner.class_names == NEW_NAMES
    new_logits = _eval_logits(learner, images)
    assert new_logits.shape == (len(images), len(NEW_NAMES))
    assert torch.isfinite(new_logits).all()
    for k, v in learner.learned_state_dict().items():
        assert torch.equal(v, learned[k]), k
    learner.set_classes(NAMES)  # back to the first set: the same logits again
    assert (_eval_logits(learner, images) - old_logits).abs().max().item() < 1e-5
    with pytest.raises(ValueError):
        learner.set_classes([])


@pytest.mark.parametrize("name", list_learners())
def test_checkpoint_and_hparams_rebuild_the_same_learner(name, clip):
    torch.manual_seed(0)
    learner = build_learner(name, clip, NAMES)
    images, labels = _batch(clip)
    _train(learner, images, labels, steps=2)
    state = learner.learned_state_dict()
    logits = _eval_logits(learner, images)

    torch.manual_seed(123)  # a different random init: only the checkpoint can make them equal
    fresh = build_learner(name, clip, NAMES, **learner.hparams())
    assert fresh.hparams() == learner.hparams()
    assert type(fresh) is type(learner)
    assert {k: v.shape for k, v in fresh.named_parameters()} == {k: v.shape for k, v in learner.named_parameters()}
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    assert not unexpected
    assert not set(missing) & set(state)
    assert torch.equal(_eval_logits(fresh, images), logits)


#: class names as Dassl's split files spell them, and as every official trainer writes them in a prompt
SPLIT_NAMES = ["american_bulldog", "Apply_Eye_Makeup", "annual crop land"]
PROMPT_NAMES = ["american bulldog", "Apply Eye Makeup", "annual crop land"]


@pytest.mark.parametrize("name", list_learners())
def test_underscores_in_class_names_become_spaces_in_every_prompt(name, clip):
    """Class tokens, frozen template features (KgCoOp, VPT, zero-shot, PromptSRC's targets), logits
    and loss terms are those of the names with spaces; the names themselves are kept as given."""
    images, labels = _batch(clip)
    built = []
    for names in (SPLIT_NAMES, PROMPT_NAMES):
        torch.manual_seed(0)
        learner = build_learner(name, clip, names)
        learner.train()
        losses = learner.loss(images, labels)
        built.append((learner, {k: v.item() for k, v in losses.items()}, _eval_logits(learner, images)))
    (split, split_losses, split_logits), (spaced, spaced_losses, spaced_logits) = built
    assert split.class_names == SPLIT_NAMES
    assert torch.equal(split.class_token_ids, spaced.class_token_ids)
    assert torch.equal(split_logits, spaced_logits)
    assert split_losses == spaced_losses


def test_prompt_class_name_is_the_one_rule_and_zeroshot_reexports_the_features(clip):
    import vlprompt.zeroshot
    from vlprompt.learners import common

    assert common.prompt_class_name("Apply_Eye_Makeup") == "Apply Eye Makeup"
    assert common.prompt_class_name("boeing 737-800") == "boeing 737-800"
    with pytest.raises(TypeError, match="got 3"):
        common.prompt_class_name(3)
    assert vlprompt.zeroshot.class_text_features is common.class_text_features
    assert torch.equal(common.class_text_features(clip, SPLIT_NAMES, "a photo of a {}, a type of pet."),
                       common.class_text_features(clip, PROMPT_NAMES, "a photo of a {}, a type of pet."))


def test_learners_sit_below_zeroshot_and_the_engine():
    """Importing the learners must not import vlprompt.zeroshot or the engine (which imports the learners)."""
    import subprocess
    import sys

    code = ("import sys, vlprompt.learners; "
            "bad = sorted(m for m in sys.modules if m in ('vlprompt.zeroshot', 'vlprompt.engine')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------- CoOp
def _official_coop_features(clip, ctx, names, position):
    """CoOp's published construction: tokenize "X X X X name." at the full 77-token context,
    cut into prefix / name / suffix embeddings, reassemble with the context, pool at the
    placeholder prompt's end-of-text token."""
    model = clip.model
    n_ctx = ctx.shape[-2]
    ids = clip.tokenize([" ".join(["X"] * n_ctx) + f" {n}." for n in names])
    emb = model.token_embedding(ids)
    rows = []
    for i, name in enumerate(names):
        n_len = len(clip.tokenizer.encode(name))
        c = ctx[i] if ctx.dim() == 3 else ctx
        prefix, name_tok, rest = emb[i, :1], emb[i, 1 + n_ctx : 1 + n_ctx + n_len], emb[i, 1 + n_ctx + n_len :]
        if position == "end":
            parts = [prefix, c, name_tok, rest]
        elif position == "front":
            parts = [prefix, name_tok, c, rest]
        else:
            half = n_ctx // 2
            parts = [prefix, c[:half], name_tok, c[half:], rest]
        rows.append(torch.cat(parts))
    x = torch.stack(rows) + model.positional_embedding
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
    x = x[torch.arange(len(x)), ids.argmax(-1)] @ model.text_projection
    return F.normalize(x, dim=-1)


@pytest.mark.parametrize("position", ["end", "front", "middle"])
def test_coop_class_token_positions_match_the_official_layout(clip, position):
    torch.manual_seed(4)
    learner = CoOp(clip, NAMES, n_ctx=4, class_token_position=position)
    with torch.no_grad():
        learner.ctx.normal_()  # far from any word, so a misplaced token would show
        got = learner.encode_classes()
        ref = _official_coop_features(clip, learner.ctx, NAMES, position)
    assert got.shape == (len(NAMES), clip.embed_dim)
    assert (got - ref).abs().max().item() < 1e-5


def test_coop_class_specific_context_is_per_class(clip):
    torch.manual_seed(5)
    learner = CoOp(clip, NAMES, n_ctx=4, class_specific=True)
    assert learner.ctx.shape == (len(NAMES), 4, clip.text_width)
    assert not torch.allclose(learner.ctx[0], learner.ctx[1])
    with torch.no_grad():
        ref = _official_coop_features(clip, learner.ctx, NAMES, "end")
    got = learner.encode_classes()
    assert (got - ref).abs().max().item() < 1e-5
    got[0].sum().backward()  # class 0's feature depends on class 0's context only
    assert learner.ctx.grad[0].abs().sum() > 0
    assert learner.ctx.grad[1:].abs().sum() == 0
    with pytest.raises(ValueError, match="class-specific"):
        learner.set_classes(NEW_NAMES)


@pytest.mark.parametrize("cls", [CoOp, KgCoOp])
def test_coop_class_specific_with_ctx_init_is_one_shared_context(clip, cls):
    """Official CoOp (and KgCoOp) apply CSC only to random init: a phrase gives one shared context."""
    with pytest.warns(UserWarning, match="class_specific=True is ignored with ctx_init='a photo of a'"):
        learner = cls(clip, NAMES, n_ctx=4, ctx_init="a photo of a", class_specific=True)
    assert learner.ctx.shape == (4, clip.text_width)
    assert learner.hparams()["class_specific"] is False
    learner.set_classes(NEW_NAMES)  # a shared context serves any class set


# ---------------------------------------------------------------------------------------- CoCoOp
def test_cocoop_defaults_follow_the_paper(clip):
    learner = CoCoOp(clip, NAMES)
    assert learner.image_conditioned_text
    words = clip.embed_tokens(torch.tensor(clip.tokenizer.encode("a photo of a"))).float()
    assert torch.equal(learner.ctx.detach(), words)
    e, d = clip.embed_dim, clip.text_width
    lin1, lin2 = learner.meta_net.linear1, learner.meta_net.linear2
    assert (lin1.in_features, lin1.out_features, lin2.in_features, lin2.out_features) == (e, e // 16, e // 16, d)
    with pytest.raises(ValueError, match="image"):
        learner.encode_classes()


def test_cocoop_batched_equals_the_per_image_loop(clip):
    torch.manual_seed(6)
    learner = CoCoOp(clip, NAMES)
    images, labels = _batch(clip, n=5)
    _train(learner, images, labels, steps=1)  # move away from the init
    learner.train()
    image_features = learner.encode_images(images)
    batched = learner.logits(image_features, learner.encode_classes(image_features))
    # The published forward: one text-tower call per image, its context shifted by pi(x).
    loop = []
    for f in image_features:
        ctx_i = learner.ctx + learner.meta_net(f)
        text = clip.encode_text(learner.class_token_ids, TextPrompts(insert=[TokenInsertion(ctx_i, 1)]))
        loop.append(clip.logit_scale * F.normalize(text, dim=-1) @ f)
    loop = torch.stack(loop)
    assert batched.shape == (5, len(NAMES))
    assert (batched - loop).abs().max().item() < 1e-5
    assert (learner(images) - loop).abs().max().item() < 1e-5
    # and the gradients agree too
    g_batched = torch.autograd.grad(F.cross_entropy(batched, labels[:5]), learner.ctx)[0]
    g_loop = torch.autograd.grad(F.cross_entropy(loop, labels[:5]), learner.ctx)[0]
    assert torch.allclose(g_batched, g_loop, atol=1e-6)


def test_cocoop_meta_net_conditions_the_class_features(clip):
    torch.manual_seed(7)
    learner = CoCoOp(clip, NAMES)
    images, _ = _batch(clip, n=2)
    with torch.no_grad():
        feats = learner.encode_images(images)
        per_image = learner.encode_classes(feats)
        assert per_image.shape == (2, len(NAMES), clip.embed_dim)
        assert (per_image[0] - per_image[1]).abs().max().item() > 1e-4
        # with a silent Meta-Net, CoCoOp is CoOp with the same context, for every image
        learner.meta_net.linear2.weight.zero_()
        learner.meta_net.linear2.bias.zero_()
        silent = learner.encode_classes(feats)
        coop = CoOp(clip, NAMES, n_ctx=4, ctx_init="a photo of a").encode_classes()
    assert (silent - coop[None]).abs().max().item() < 1e-5


# ---------------------------------------------------------------------------------------- KgCoOp
def _clip_template_features(clip, names, template):
    """The frozen hand-crafted class features, straight from open_clip."""
    ids = clip.tokenize([template.format(n) for n in names])
    with torch.no_grad():
        return F.normalize(clip.model.encode_text(ids), dim=-1)


def test_kgcoop_term_is_w_times_one_minus_mean_cosine(clip):
    template = get_template("dtd", "kgcoop")
    learner = KgCoOp(clip, NAMES, w=8.0, template=template)
    assert learner.hparams()["template"] == "a photo of a {}, a type of texture."
    images, labels = _batch(clip)
    torch.manual_seed(8)
    with torch.no_grad():
        learner.ctx.add_(0.5 * torch.randn_like(learner.ctx))
    for names in (NAMES, NEW_NAMES):  # the targets follow the class set
        learner.set_classes(names)
        losses = learner.loss(images, labels % len(names))
        with torch.no_grad():
            cos = (learner.encode_classes() * _clip_template_features(clip, names, template)).sum(-1)
        expected = 8.0 * (1 - cos.mean())
        assert set(losses) == {"loss_ce", "loss_kg"}
        assert expected.item() > 1e-3
        assert losses["loss_kg"].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)


def test_kgcoop_term_vanishes_when_the_context_spells_the_template(clip):
    """Context "a photo of a" at the end reproduces "a photo of a {}." token for token."""
    learner = KgCoOp(clip, NAMES)
    images, labels = _batch(clip)
    assert learner.loss(images, labels)["loss_kg"].abs().item() < 1e-5
    with torch.no_grad():
        learner.ctx.add_(torch.randn_like(learner.ctx))
    assert learner.loss(images, labels)["loss_kg"].item() > 1e-3


def test_kgcoop_without_guidance_has_coops_gradient(clip):
    images, labels = _batch(clip)
    coop = CoOp(clip, NAMES, n_ctx=4, ctx_init="a photo of a")
    kg0 = KgCoOp(clip, NAMES, w=0.0)
    kg8 = KgCoOp(clip, NAMES, w=8.0)
    torch.manual_seed(9)
    shift = 0.3 * torch.randn_like(coop.ctx)
    grads = []
    for learner in (coop, kg0, kg8):
        assert [k for k, p in learner.named_parameters() if p.requires_grad] == ["ctx"]
        with torch.no_grad():
            learner.ctx.add_(shift)  # same context everywhere, away from the template
        learner.train()
        sum(learner.loss(images, labels).values()).backward()
        grads.append(learner.ctx.grad)
    assert torch.allclose(grads[1], grads[0], atol=1e-7)
    assert not torch.allclose(grads[2], grads[0], atol=1e-4)
