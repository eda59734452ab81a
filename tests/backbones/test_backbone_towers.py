"""The promptable towers: exact with no prompts, exact truncation, prompt semantics, gradients."""

import pytest
import torch

from vlprompt.backbones import (
    ContextOverflowError,
    ImagePrompts,
    TextPrompts,
    TokenInsertion,
    build_clip,
    list_clips,
)

CLASS_PROMPTS = [
    "a photo of a dog.",
    "a photo of a golden retriever, a type of pet.",
    "a centered satellite photo of Annual Crop Land.",
    "x",
    "a photo of a 2012 Tesla Model S sedan parked in front of a very tall building at night.",
]


def _reference_text(model, ids, embeddings=None):
    """open_clip's text path at the full 77-token context, optionally on given embeddings."""
    x = model.token_embedding(ids) if embeddings is None else embeddings
    x = model.transformer(x + model.positional_embedding, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    return x[torch.arange(len(x)), ids.argmax(-1)] @ model.text_projection


def test_registry_lists_required_architectures():
    names = list_clips()
    for required in ("ViT-B-16", "ViT-B-32", "ViT-L-14", "RN50", "toy", "test-tiny"):
        assert required in names
    with pytest.raises(KeyError, match="available: .*ViT-B-16"):
        build_clip("ViT-B-17")


@pytest.fixture(scope="module")
def vit_b16():
    torch.manual_seed(0)
    return build_clip("ViT-B-16")


def test_vit_b16_matches_open_clip_without_prompts(vit_b16):
    model = vit_b16.model
    ids = vit_b16.tokenize(CLASS_PROMPTS)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        text_diff = (vit_b16.encode_text(ids) - model.encode_text(ids)).abs().max().item()
        image_diff = (vit_b16.encode_image(images) - model.encode_image(images)).abs().max().item()
    assert text_diff < 1e-5
    assert image_diff < 1e-5
    assert vit_b16.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_rn50_text_tower_matches_open_clip_and_refuses_image_prompts():
    torch.manual_seed(0)
    rn50 = build_clip("RN50")
    ids = rn50.tokenize(CLASS_PROMPTS)
    with torch.no_grad():
        diff = (rn50.encode_text(ids) - rn50.model.encode_text(ids)).abs().max().item()
        assert rn50.encode_image(torch.randn(1, 3, 224, 224)).shape == (1, rn50.embed_dim)
    assert diff < 1e-5
    assert not rn50.is_vit and rn50.vision_width is None
    with pytest.raises(ValueError, match="ViT image tower"):
        rn50.encode_image(torch.randn(1, 3, 224, 224), ImagePrompts(tokens=torch.zeros(2, 64)))


def test_truncated_context_equals_full_context_with_prompts(clip):
    """Truncation after the last end-of-text token is exact, with shallow and deep prompts too."""
    model = clip.model
    torch.manual_seed(1)
    ctx = torch.randn(4, clip.text_width)
    deep = {1: torch.randn(4, clip.text_width)}
    ids = clip.tokenize(["X X X X " + p for p in CLASS_PROMPTS])
    ids_plain = clip.tokenize(CLASS_PROMPTS)
    seen_lengths = []
    hook = model.transformer.resblocks[0].register_forward_pre_hook(
        lambda _m, args: seen_lengths.append(args[0].shape[1])
    )
    with torch.no_grad():
        got = clip.encode_text(ids_plain, TextPrompts(insert=[TokenInsertion(ctx, 1)], deep=deep))
        hook.remove()
        # full length: 77 tokens, prompts written in place of the X placeholders
        emb = model.token_embedding(ids).clone()
        emb[:, 1:5] = ctx
        x = emb + model.positional_embedding
        for i, block in enumerate(model.transformer.resblocks):
            if i == 1:
                x = torch.cat([x[:, :1], deep[1].expand(len(x), -1, -1), x[:, 5:]], dim=1)
            x = block(x, attn_mask=model.attn_mask)
        x = model.ln_final(x)
        ref = x[torch.arange(len(x)), ids.argmax(-1)] @ model.text_projection
    assert (got - ref).abs().max().item() < 1e-5
    # the tower really ran on the truncated context: longest prompt + its end-of-text token
    assert seen_lengths == [int(ids.argmax(-1).max()) + 1]
    assert seen_lengths[0] < 40


def test_insertion_positions_follow_coop_class_token_positions(clip):
    """Per-row positions reproduce CoOp's 'front' and 'middle' layouts written with placeholders."""
    model = clip.model
    torch.manual_seed(2)
    ctx = torch.randn(4, clip.text_width)
    names = ["dog", "golden retriever", "annual crop land"]
    plain = clip.tokenize([f"{n}." for n in names])
    name_end = plain.argmax(-1) - 1  # index of the "." token
    with torch.no_grad():
        front = clip.encode_text(plain, TextPrompts(insert=[TokenInsertion(ctx, name_end)]))
        middle = clip.encode_text(
            plain, TextPrompts(insert=[TokenInsertion(ctx[:2], 1), TokenInsertion(ctx[2:], name_end)])
        )
        for layout, got in (("front", front), ("middle", middle)):
            texts = [f"{n} X X X X." if layout == "front" else f"X X {n} X X." for n in names]
            ids = clip.tokenize(texts)
            emb = model.token_embedding(ids).clone()
            for r, n_len in enumerate((plain.argmax(-1) - 2).tolist()):
                slots = list(range(1 + n_len, 5 + n_len)) if layout == "front" else [1, 2, 3 + n_len, 4 + n_len]
                emb[r, slots] = ctx
            ref = _reference_text(model, ids, emb)
            assert (got - ref).abs().max().item() < 1e-5, layout


def test_grouped_prompts_equal_one_group_at_a_time(clip):
    """Per-image text prompts (CoCoOp) in one batched call equal image-by-image calls."""
    torch.manual_seed(3)
    ids = clip.tokenize(["dog.", "cat.", "annual crop land."])
    per_image = torch.randn(5, 1, 4, clip.text_width)
    with torch.no_grad():
        batched = clip.encode_text(ids, TextPrompts(insert=[TokenInsertion(per_image, 1)]))
        loop = torch.stack(
            [clip.encode_text(ids, TextPrompts(insert=[TokenInsertion(p[0], 1)])) for p in per_image]
        )
    assert batched.shape == (5, 3, clip.embed_dim)
    assert (batched - loop).abs().max().item() < 1e-5


def test_image_prompts_are_appended_and_replaced_per_layer(clip):
    visual = clip.model.visual
    torch.manual_seed(4)
    images = torch.randn(2, 3, 32, 32)
    shallow, deep = torch.randn(3, 64), torch.randn(3, 64)
    with torch.no_grad():
        got = clip.encode_image(images, ImagePrompts(tokens=shallow, deep={1: deep}))
        x = visual.conv1(images).flatten(2).transpose(1, 2)
        x = torch.cat([visual.class_embedding.expand(2, 1, -1), x], 1) + visual.positional_embedding
        x = visual.ln_pre(torch.cat([x, shallow.expand(2, -1, -1)], 1))
        x = visual.transformer.resblocks[0](x)
        x = visual.transformer.resblocks[1](torch.cat([x[:, :-3], deep.expand(2, -1, -1)], 1))
        ref = visual.ln_post(x[:, 0]) @ visual.proj
        plain = clip.encode_image(images)
    assert (got - ref).abs().max().item() < 1e-5
    assert (got - plain).abs().max().item() > 1e-3
    with pytest.raises(ValueError, match="replace them"):
        clip.encode_image(images, ImagePrompts(tokens=shallow, deep={1: torch.randn(2, 64)}))
    with pytest.raises(ValueError, match="2 layers"):
        clip.encode_image(images, ImagePrompts(tokens=shallow, deep={5: deep}))


def test_gradients_reach_prompts_through_both_towers_and_never_the_backbone():
    """A vision prompt computed from a text prompt (MaPLe-style coupling) trains the text prompt
    through both towers; the frozen weights get no gradient and do not change."""
    torch.manual_seed(5)
    clip = build_clip("test-tiny")
    before = {k: v.clone() for k, v in clip.state_dict().items()}
    text_prompt = torch.nn.Parameter(torch.randn(2, clip.text_width) * 0.02)
    coupling = torch.nn.Linear(clip.text_width, clip.vision_width)
    ids = clip.tokenize(["of a dog.", "of a cat."])
    clip.train()
    assert not clip.model.training
    text = clip.encode_text(ids, TextPrompts(insert=[TokenInsertion(text_prompt, 1)]), normalize=True)
    image = clip.encode_image(torch.randn(2, 3, 32, 32), ImagePrompts(tokens=coupling(text_prompt)), normalize=True)
    loss = torch.nn.functional.cross_entropy(clip.logit_scale * image @ text.t(), torch.tensor([0, 1]))
    loss.backward()
    assert text_prompt.grad is not None and text_prompt.grad.abs().sum() > 0
    assert coupling.weight.grad is not None and coupling.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.parameters())
    assert all(torch.equal(before[k], v) for k, v in clip.state_dict().items())

    # the image-tower path alone also moves the text prompt (the coupling carries it)
    text_prompt.grad = None
    image = clip.encode_image(torch.randn(2, 3, 32, 32), ImagePrompts(tokens=coupling(text_prompt)))
    image.sum().backward()
    assert text_prompt.grad.abs().sum() > 0


def test_context_overflow_and_bad_prompts_give_clear_errors(clip):
    long_name = " ".join(["supercalifragilistic"] * 40)
    with pytest.raises(ContextOverflowError, match="supercalifragilistic"):
        clip.tokenize([f"a photo of a {long_name}."])
    ids = clip.tokenize(["a photo of a " + " ".join(["dog"] * 70)])
    with pytest.raises(ValueError, match="77-token context"):
        clip.encode_text(ids, TextPrompts(insert=[TokenInsertion(torch.zeros(8, 64), 1)]))
    with pytest.raises(ValueError, match="end-of-text"):
        clip.encode_text(clip.tokenize(["x"]), TextPrompts(deep={1: torch.zeros(4, 64)}))
    with pytest.raises(ValueError, match="layers"):
        clip.encode_text(clip.tokenize(["a b c d e f"]), TextPrompts(deep={2: torch.zeros(2, 64)}))


def test_conv_stem_vit_equals_open_clip_forward_and_keeps_prompt_paths():
    """The toy arch's conv stem replaces only the patch projection: open_clip's own forward (which
    calls ``visual.conv1``) and vlprompt's tower agree, and deep image prompts still apply."""
    from vlprompt.backbones import ConvStem

    torch.manual_seed(0)
    clip = build_clip("toy")
    visual = clip.model.visual
    assert isinstance(visual.conv1, ConvStem) and visual.conv1.stride == 8
    assert clip.vision_width == 128
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ours = clip.encode_image(images)
        reference = visual(images)
        prompted = clip.encode_image(images, ImagePrompts(torch.randn(2, 128), deep={1: torch.randn(2, 128)}))
    assert torch.allclose(ours, reference, atol=1e-5)
    assert (prompted - ours).abs().max() > 1e-3
    assert visual.conv1(images).shape == (3, 128, 8, 8)  # the 8x8 token grid of patch 8


def test_conv_stem_must_match_the_patch_size():
    from vlprompt.backbones import build_open_clip_model, install_conv_stem

    visual = build_open_clip_model("test-tiny").visual  # patch 8
    with pytest.raises(ValueError, match="stride 4, but the ViT's patch size is 8"):
        install_conv_stem(visual, (8, 16))
