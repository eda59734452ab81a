"""KAPT: the discrete prompt's token layout and truncation, the visual head, the losses, the patch tokens,
and the description-averaged zero-shot baseline."""

import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT

from vlprompt.datasets.knowledge import KnowledgeError, KnowledgeWarning
from vlprompt.learners import KAPT, ZeroShotCLIP, build_learner
from vlprompt.learners.kapt import AttentionPoolingHead

DESCRIPTIONS = {
    "sea lion": "A sea lion is a marine mammal with flippers that barks loudly.",
    "golden retriever": "A golden retriever is a dog breed with a golden coat that fetches game.",
    "red fox": "A red fox is a small wild canine with a bushy tail and orange fur.",
}
NAMES = list(DESCRIPTIONS)


def _kapt(clip, names=NAMES, **kw):
    kw.setdefault("knowledge", {"descriptions": DESCRIPTIONS})
    return KAPT(clip, names, **kw)


def test_patch_tokens_are_the_projected_last_layer_patches(clip):
    images = torch.randn(2, 3, clip.image_size, clip.image_size, generator=torch.Generator().manual_seed(0))
    plain = clip.encode_image(images, normalize=True)
    pooled, tokens = clip.encode_image(images, normalize=True, return_tokens=True)
    assert torch.equal(plain, pooled)  # the option changes nothing of the pooled feature
    visual = clip.model.visual
    visual.output_tokens = True
    try:
        ref_pooled, ref_tokens = visual(images)  # open_clip's own tokens: after ln_post, not projected
    finally:
        visual.output_tokens = False
    n_patches = (clip.image_size // visual.patch_size[0]) ** 2
    assert tokens.shape == (2, n_patches, clip.embed_dim)
    assert torch.allclose(tokens, ref_tokens @ visual.proj, atol=1e-6)
    assert torch.allclose(pooled, F.normalize(ref_pooled, dim=-1), atol=1e-6)


def test_discrete_prompt_token_layout(clip):
    learner = _kapt(clip, extract="tfidf", n_keywords=3, n_ctx=4, ctx_init="")
    tok = clip.tokenizer
    for row, name in enumerate(NAMES):
        words = learner.class_knowledge[name].split()
        assert len(words) == 3 and not set(words) & set(name.split())  # class-name words are not key words
        text = f"{name}, {' '.join(words)}."
        ids = [tok.sot_token_id, *tok.encode(text), tok.eot_token_id]
        got = learner.class_token_ids[row]
        assert got[: len(ids)].tolist() == ids and not got[len(ids):].any()
    assert learner.class_knowledge["red fox"] == "small wild canine"  # all its words are unique: the first three
    # the learned context goes right after the start token: the text tower sees SOS, 4 vectors, the words
    captured = {}
    encode = clip.encode_text

    def spy(token_ids, prompts=None, normalize=False):
        captured["prompts"] = prompts
        return encode(token_ids, prompts, normalize)

    clip.encode_text = spy
    try:
        learner.encode_classes()
    finally:
        del clip.encode_text
    (insert,) = captured["prompts"].insert
    assert insert.position == 1 and insert.tokens is learner.ctx


def test_other_extractions_and_classes_without_a_description(clip):
    clause = _kapt(clip, extract="clause")
    assert clause.class_knowledge["sea lion"] == "A sea lion is a marine mammal with flippers that barks loudly"
    assert clause.prompt_text("sea lion", clause.class_knowledge["sea lion"]).endswith("barks loudly.")
    with pytest.warns(KnowledgeWarning, match="first 'snow owl'"):
        learner = _kapt(clip, names=[*NAMES, "snow owl"])
    row = learner.class_names.index("snow owl")
    ids = [clip.tokenizer.sot_token_id, *clip.tokenizer.encode("snow owl."), clip.tokenizer.eot_token_id]
    assert learner.class_token_ids[row, : len(ids)].tolist() == ids  # no description: the class name alone
    with pytest.raises(KnowledgeError, match="describes none"):
        _kapt(clip, names=["snow owl", "cat"])
    with pytest.raises(KnowledgeError, match="first 'snow owl'"):
        _kapt(clip, names=[*NAMES, "snow owl"], on_missing="error")


def test_overflowing_knowledge_is_cut_at_a_word_boundary_and_logged_once(clip, monkeypatch):
    logged = []
    monkeypatch.setattr("vlprompt.learners.kapt.print_log", lambda msg, **kw: logged.append(msg))
    long = {n: f"{text} " + " ".join(f"word{i}" for i in range(80)) for n, text in DESCRIPTIONS.items()}
    learner = KAPT(clip, NAMES, knowledge={"descriptions": long}, extract="full", n_ctx=4, ctx_init="a photo of a")
    cut_logs = [m for m in logged if "cut at a word boundary" in m]
    assert len(cut_logs) == 1 and "3 of 3 classes" in cut_logs[0]  # one message for the whole class set
    reserve = max(4, len(clip.tokenizer.encode("a photo of a")) + 1)
    for row, name in enumerate(NAMES):
        kept = learner.class_knowledge[name]
        assert learner.cut[name] == kept and long[name].startswith(kept)
        assert long[name][len(kept)] == " "  # a whole-word prefix
        n_tokens = int(learner.class_token_ids[row].argmax()) + 1
        assert n_tokens + reserve <= clip.context_length  # fits with the context and the frozen phrase
        longer = f"{kept} {long[name][len(kept):].split()[0]}"  # one more word would not fit
        assert len(clip.tokenizer.encode(learner.prompt_text(name, longer))) + 2 + reserve > clip.context_length
    learner.set_classes(NAMES[:1])  # a new class set with a cut is reported again, once
    assert len([m for m in logged if "cut at a word boundary" in m]) == 2


def test_head_output_on_a_known_input():
    head = AttentionPoolingHead(4, query="cls", reduction=1, heads=1, ratio=0.25)
    eye = torch.eye(4)
    with torch.no_grad():
        for lin in (head.q, head.k, head.v):
            lin.weight.copy_(eye)
    pooled = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    tokens = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]])
    # W_o starts at zero: the head is the identity on the normalised pooled feature
    assert torch.allclose(head(pooled, tokens), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    with torch.no_grad():
        head.out.weight.copy_(eye)
    w = torch.softmax(torch.tensor([1.0, 0.0]) / 2.0, dim=0)  # q.k / sqrt(4) for the two patches
    expected = F.normalize(0.75 * torch.tensor([1.0, 0, 0, 0]) + 0.25 * torch.tensor([w[0], w[1], 0, 0]), dim=0)
    assert torch.allclose(head.attention(pooled, tokens)[0, 0], w, atol=1e-6)
    assert torch.allclose(head(pooled, tokens)[0], expected, atol=1e-6)
    learned = AttentionPoolingHead(4, query="learned", reduction=2, heads=2)
    assert learned.query.shape == (4,) and learned.attention(pooled, tokens).shape == (1, 2, 2)
    n = sum(p.numel() for p in learned.parameters())
    assert n == 4 * 4 * 2 + 4  # q, k, v (4 -> 2), out (2 -> 4), the query
    with pytest.raises(ValueError, match="divisible"):
        AttentionPoolingHead(4, reduction=1, heads=3)


def test_parameter_counts_losses_and_ablations(clip):
    learner = _kapt(clip, n_ctx=4, ctx_init="a photo of a", head_reduction=4, w_text=8.0, w_image=1.0,
                    kc_target="knowledge", branches="joint")
    e = clip.embed_dim
    assert learner.parameter_counts() == {"context": 4 * clip.text_width, "head": 4 * e * (e // 4)}
    assert sum(learner.parameter_counts().values()) == sum(p.numel() for p in learner.parameters())
    images = torch.randn(3, 3, clip.image_size, clip.image_size, generator=torch.Generator().manual_seed(2))
    losses = learner.loss(images, torch.tensor([0, 1, 2]))
    assert set(losses) == {"loss_ce", "loss_kc", "loss_vc"}
    # the context starts from the phrase and the head at the identity: both consistency terms start at 0
    assert losses["loss_kc"].abs().item() < 1e-5 and losses["loss_vc"].abs().item() < 1e-5
    frozen = ZeroShotCLIP(clip, NAMES, templates="a photo of a {}.")
    no_knowledge = _kapt(clip, knowledge=None, visual_head=False)
    assert no_knowledge.head is None and no_knowledge.parameter_counts()["head"] == 0
    assert torch.allclose(no_knowledge.encode_classes(), frozen.encode_classes(), atol=1e-5)  # plain CoOp init
    with pytest.raises(ValueError, match="extract"):
        _kapt(clip, extract="summary")
    # the consistency targets: the knowledge prompt, the plain template, or the normalised mean of both
    both = _kapt(clip, kc_target="both").knowledge_features
    template = _kapt(clip, kc_target="template").knowledge_features
    knowledge = _kapt(clip, kc_target="knowledge").knowledge_features
    assert torch.allclose(template, frozen.encode_classes(), atol=1e-5)
    assert torch.allclose(both, F.normalize(template + knowledge, dim=-1), atol=1e-5)


def test_class_switch_takes_the_new_classes_knowledge_from_the_source(clip):
    learner = _kapt(clip, names=NAMES[:2])
    assert set(learner.class_knowledge) == set(NAMES[:2])
    learner.set_classes(NAMES[2:])
    assert list(learner.class_knowledge) == ["red fox"] and "bushy" in learner.class_knowledge["red fox"]
    assert learner.knowledge_features.shape == (1, clip.embed_dim)


def test_zero_shot_with_descriptions_averages_description_prompts(clip):
    given = {"sea lion": ["A marine mammal.", "It barks."], "golden retriever": "A golden retriever fetches."}
    with pytest.warns(KnowledgeWarning, match="first 'red fox'"):
        zs = ZeroShotCLIP(clip, NAMES, descriptions={"descriptions": given})
    assert zs.description_prompts("sea lion") == ["sea lion, which is a marine mammal.", "sea lion, which is it barks."]
    assert zs.description_prompts("golden retriever") == ["A golden retriever fetches."]  # names its class: as written
    feats = zs.encode_classes()
    ids = clip.tokenize(["sea lion, which is a marine mammal.", "sea lion, which is it barks."])
    expected = F.normalize(clip.encode_text(ids, normalize=True).mean(0), dim=-1)
    assert torch.allclose(feats[0], expected, atol=1e-6)
    plain = ZeroShotCLIP(clip, NAMES)
    assert torch.allclose(feats[2], plain.encode_classes()[2], atol=1e-6)  # no description: the template
    assert "descriptions" not in plain.hparams()  # the plain baseline's record is unchanged
    rebuilt = build_learner("zsclip", clip, NAMES[:2], **zs.hparams())
    assert torch.allclose(rebuilt.encode_classes(), feats[:2], atol=1e-6)


def test_kapt_and_descriptions_configs_load():

    from vlprompt.engine import load_config

    root = ROOT / "configs"
    for rel in ("kapt/no_discrete/toy_hues.py", "kapt/no_head/toy_shapes.py", "zsclip/descriptions/toy_hues.py"):
        cfg = load_config(root / rel)
        assert cfg.model.backbone.name == "toy"
    assert load_config(root / "zsclip/descriptions/toy_hues.py").model.learner.descriptions == dict(dataset="toy-hues")
    assert load_config(root / "kapt/no_discrete/toy_hues.py").model.learner.knowledge is None
    assert load_config(root / "kapt/no_head/toy_shapes.py").model.learner.visual_head is False
    assert load_config(root / "kapt/dtd.py").model.learner.knowledge.file == "dtd/knowledge.tsv"
