"""CLIP-LoRA and the backbone's low-rank ability: updates equal merged weights, start at zero-shot CLIP, train
only the adapters, save only them, and load back through the checkpoint reader."""

import copy
import json

import pytest
import torch

from vlprompt.backbones import ImagePrompts, LowRankUpdate, PromptableCLIP, TextPrompts, save_safetensors
from vlprompt.backbones.lowrank import PROJECTIONS, adapted_block
from vlprompt.learners import CLIPLoRA, ZeroShotCLIP

NAMES = ["sea_lion", "golden retriever", "Apply_Eye_Makeup"]


def _merged(clip: PromptableCLIP, tower: str, layer: int, name: str, update: LowRankUpdate) -> PromptableCLIP:
    """A copy of ``clip`` whose projection ``name`` of block ``layer`` has ``scale * up @ down`` added to its
    weight: what a low-rank update must equal without dropout."""
    model = copy.deepcopy(clip.model)
    blocks = model.transformer.resblocks if tower == "text" else model.visual.transformer.resblocks
    block = blocks[layer]
    delta = update.scale * update.up @ update.down
    with torch.no_grad():
        if name in ("q", "k", "v"):
            width = block.attn.embed_dim
            row = "qkv".index(name) * width
            block.attn.in_proj_weight[row : row + width] += delta
        else:
            {"out": block.attn.out_proj, "fc": block.mlp.c_fc, "proj": block.mlp.c_proj}[name].weight += delta
    return PromptableCLIP(model, clip.info)


@pytest.mark.parametrize("name", PROJECTIONS)
@pytest.mark.parametrize("tower", ["text", "image"])
def test_a_low_rank_update_equals_the_merged_weight(clip, tower, name):
    blocks = clip.model.transformer.resblocks if tower == "text" else clip.model.visual.transformer.resblocks
    weight = {"q": blocks[1].attn.out_proj.weight, "k": blocks[1].attn.out_proj.weight,
              "v": blocks[1].attn.out_proj.weight, "out": blocks[1].attn.out_proj.weight,
              "fc": blocks[1].mlp.c_fc.weight, "proj": blocks[1].mlp.c_proj.weight}[name]
    g = torch.Generator().manual_seed(5)
    update = LowRankUpdate(torch.randn(3, weight.shape[1], generator=g) * 0.3,
                           torch.randn(weight.shape[0], 3, generator=g) * 0.3, scale=0.7)
    merged = _merged(clip, tower, 1, name, update)
    if tower == "text":
        ids = clip.tokenize(["a photo of a sea lion.", "dog"])
        plain, got, want = (clip.encode_text(ids), clip.encode_text(ids, TextPrompts(low_rank={1: {name: update}})),
                            merged.encode_text(ids))
    else:
        images = torch.randn(2, 3, clip.image_size, clip.image_size, generator=g)
        plain, got, want = (clip.encode_image(images),
                            clip.encode_image(images, ImagePrompts(low_rank={1: {name: update}})),
                            merged.encode_image(images))
    assert (got - plain).abs().max() > 1e-3  # the update matters ...
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)  # ... and is exactly the merged weight


def test_an_adapted_block_without_updates_is_open_clips_block(clip):
    for blocks, mask in ((clip.model.transformer.resblocks, clip.model.attn_mask[:6, :6]),
                         (clip.model.visual.transformer.resblocks, None)):
        x = torch.randn(2, 6, blocks[0].attn.embed_dim)
        torch.testing.assert_close(adapted_block(blocks[0], x, mask, {}), blocks[0](x, attn_mask=mask),
                                   atol=2e-6, rtol=1e-5)


def test_updates_that_do_not_fit_are_refused_naming_layer_and_projection(clip):
    ids = clip.tokenize(["dog"])
    width = clip.text_width
    with pytest.raises(ValueError, match="text layer 0: no projection 'query'"):
        clip.encode_text(ids, TextPrompts(low_rank={0: {"query": LowRankUpdate(torch.zeros(2, width),
                                                                                torch.zeros(width, 2))}}))
    with pytest.raises(ValueError, match="text layer 0 fc: .*expected"):
        clip.encode_text(ids, TextPrompts(low_rank={0: {"fc": LowRankUpdate(torch.zeros(2, width),
                                                                             torch.zeros(width, 2))}}))
    with pytest.raises(ValueError, match="text layer 99"):
        clip.encode_text(ids, TextPrompts(low_rank={99: {"q": LowRankUpdate(torch.zeros(2, width),
                                                                             torch.zeros(width, 2))}}))


def test_clip_lora_starts_at_zero_shot_clip_with_its_template(clip):
    torch.manual_seed(0)
    lora = CLIPLoRA(clip, NAMES, template="a photo of a {}, a type of pet.", logit_scale=None).eval()
    zs = ZeroShotCLIP(clip, NAMES, templates="a photo of a {}, a type of pet.").eval()
    images = torch.randn(3, 3, clip.image_size, clip.image_size)
    torch.testing.assert_close(lora(images), zs(images), atol=1e-4, rtol=1e-5)
    # as published, the logits are 100 x the cosine whatever the backbone's temperature
    fixed = CLIPLoRA(clip, NAMES, template="a photo of a {}, a type of pet.").eval()
    torch.testing.assert_close(fixed(images), zs(images) * (100 / clip.logit_scale), atol=1e-4, rtol=1e-5)
    # A is Kaiming-uniform (bound 1/sqrt(in) for a = sqrt(5)), B is zero: LoRA's initialisation
    pair = lora.adapters["image"]["0"]["q"]
    assert torch.count_nonzero(pair.up) == 0
    assert pair.down.abs().max() <= 1 / clip.vision_width**0.5 and pair.down.std() > 0


def test_clip_lora_adapts_q_k_v_of_every_block_of_both_towers_by_default(clip):
    lora = CLIPLoRA(clip, NAMES)
    state = lora.learned_state_dict()
    layers = {"text": clip.text_layers, "image": clip.vision_layers}
    widths = {"text": clip.text_width, "image": clip.vision_width}
    assert set(state) == {f"adapters.{t}.{i}.{p}.{w}" for t in layers for i in range(layers[t]) for p in "qkv"
                          for w in ("down", "up")}
    assert sum(v.numel() for v in state.values()) == sum(layers[t] * 3 * 2 * 2 * widths[t] for t in layers)
    top = CLIPLoRA(clip, NAMES, towers=("text",), position="half-up", projections=("q", "v"), rank=4)
    n = clip.text_layers
    assert {k.rsplit(".", 1)[0] for k in top.learned_state_dict()} == {
        f"adapters.text.{i}.{p}" for i in range(n // 2, n) for p in "qv"}


def test_official_layer_sets_and_scale():
    """The official ``INDEX_POSITIONS`` for 12 blocks (loralib/utils.py) and ``alpha / sqrt(r)``
    (loralib/layers.py), not LoRA's ``alpha / r``."""
    from vlprompt.learners.clip_lora import POSITIONS

    sets = {name: rule(12) for name, rule in POSITIONS.items()}
    assert sets == {"all": list(range(12)), "bottom": [0, 1, 2, 3], "mid": [4, 5, 6, 7], "up": [8, 9, 10, 11],
                    "half-up": [6, 7, 8, 9, 10, 11], "half-bottom": [0, 1, 2, 3, 4, 5], "top3": [9, 10, 11]}
    assert POSITIONS["half-up"](24) == list(range(12, 24))  # ViT-L/14's image tower, as published


def test_updates_are_scaled_by_alpha_over_sqrt_rank(clip):
    lora = CLIPLoRA(clip, NAMES, rank=4, alpha=3.0)
    update = lora.low_rank("text")[0]["q"]
    assert update.scale == pytest.approx(3.0 / 2.0)


def test_dropout_touches_only_the_updates_input(clip):
    """With every ``up`` zero the update is zero whatever its input: training mode (dropout 0.9 on) must then
    give exactly evaluation's features, so the frozen projections see their input whole."""
    lora = CLIPLoRA(clip, NAMES, dropout=0.9)
    images = torch.randn(2, 3, clip.image_size, clip.image_size)
    lora.eval()
    want = lora.encode_images(images), lora.encode_classes()
    lora.train()
    got = lora.encode_images(images), lora.encode_classes()
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    with torch.no_grad():
        for p in lora.parameters():
            p.normal_()
    a, b = lora.encode_images(images), lora.encode_images(images)
    assert (a - b).abs().max() > 1e-4  # with non-zero updates, training-mode dropout is random


def test_training_moves_up_first_then_both(clip):
    torch.manual_seed(1)
    lora = CLIPLoRA(clip, NAMES).train()
    opt = torch.optim.AdamW(lora.parameters(), lr=1e-2)
    images, labels = torch.randn(4, 3, clip.image_size, clip.image_size), torch.tensor([0, 1, 2, 1])
    before = {k: v.clone() for k, v in lora.learned_state_dict().items()}
    for _ in range(2):
        opt.zero_grad()
        sum(lora.loss(images, labels).values()).backward()
        opt.step()
    after = lora.learned_state_dict()
    assert all(not torch.equal(after[k], before[k]) for k in after if k.endswith(".up"))
    assert any(not torch.equal(after[k], before[k]) for k in after if k.endswith(".down"))
    assert all(torch.equal(a, b) for a, b in zip(clip.state_dict().values(), lora.backbone.state_dict().values(),
                                                 strict=True))


def test_a_saved_clip_lora_loads_back_with_its_adapters(clip, tmp_path):
    from vlprompt import load_prompted_clip
    from vlprompt.engine import PromptModel
    from vlprompt.engine.hooks import to_plain

    weights = tmp_path / "tiny.pt"
    torch.save(clip.model.state_dict(), weights)
    model = PromptModel(dict(name="test-tiny", pretrained=str(weights), quick_gelu=clip.info.quick_gelu),
                        dict(type="clip_lora", position=[0, 1]),
                        NAMES)
    with torch.no_grad():
        for p in model.learner.parameters():
            p.normal_(0, 0.5)
    path = tmp_path / "learned.safetensors"
    state = model.learner.learned_state_dict()
    assert all(k.startswith("adapters.") for k in state)  # only the adapter weights are saved
    save_safetensors(state, path, {"vlprompt": json.dumps(to_plain(model.metadata()))})
    clf = load_prompted_clip(path)
    images = torch.randn(2, 3, clip.image_size, clip.image_size)
    model.learner.eval()
    torch.testing.assert_close(clf.classify(images, NAMES), model.learner(images).softmax(-1), atol=1e-5, rtol=1e-5)
    zs = ZeroShotCLIP(model.learner.backbone, NAMES).eval()
    assert (zs(images) - model.learner(images)).abs().max() > 1e-2  # the adapters were applied


def test_bad_settings_are_refused_before_building(clip):
    with pytest.raises(ValueError, match="rank"):
        CLIPLoRA(clip, NAMES, rank=0)
    with pytest.raises(ValueError, match="towers"):
        CLIPLoRA(clip, NAMES, towers=("audio",))
    with pytest.raises(ValueError, match="position 'middle'"):
        CLIPLoRA(clip, NAMES, position="middle")
    with pytest.raises(ValueError, match="position \\[40\\]"):
        CLIPLoRA(clip, NAMES, position=[40])
    with pytest.raises(ValueError, match="projections"):
        CLIPLoRA(clip, NAMES, projections=("qkv",))
