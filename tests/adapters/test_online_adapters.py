"""The online adapters (TDA ...): the cache's admission rule on a worked example, state that persists across the
stream and resets between runs, a saved state that goes on bit for bit, and their configs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlprompt.adapters import TDA, ClassCache, build_adapter, default_prompt_learner, tda_query
from vlprompt.errors import ConfigError

NAMES = ["sea_lion", "red fox", "tabby cat", "hermit_crab", "kite"]


# ------------------------------------------------------------------------------------------ the cache
def test_the_cache_admits_by_entropy_on_a_worked_example():
    """Capacity 2 in class 1: a free slot takes any entry; a full class takes one only in place of its worst
    entry and only when strictly lower; entries stay sorted by entropy, the older first on a tie."""
    cache = ClassCache(3, 2, 2)
    e = torch.eye(2)
    assert cache.admit(1, e[0], 0.5) and cache.admit(1, e[1], 0.3)
    assert cache.entropy[1].tolist() == pytest.approx([0.3, 0.5]) and torch.equal(cache.features[1], e[[1, 0]])
    assert cache.admit(1, torch.tensor([2.0, 0.0]), 0.4)  # replaces 0.5
    assert cache.entropy[1].tolist() == pytest.approx([0.3, 0.4]) and cache.features[1, 1, 0] == 2.0
    assert not cache.admit(1, torch.tensor([9.0, 9.0]), 0.4)  # equal to the worst: not strictly lower
    assert not (cache.features == 9.0).any()
    assert cache.admit(2, e[0], 0.2) and cache.admit(2, e[1], 0.2)  # a tie: the older stays first
    assert torch.equal(cache.features[2], e)
    assert len(cache) == 4 and cache.filled.tolist() == [[False, False], [True, True], [True, True]]
    # read-out: exp(-beta (1 - q . k)) per slot, 0 on free ones; the positive logits sum a class's slots
    query = e[0]
    affinity = cache.affinity(query, beta=2.0)
    assert affinity[0].tolist() == [0.0, 0.0]
    assert affinity[1].tolist() == pytest.approx([torch.tensor(-2.0).exp().item(), torch.tensor(2.0).exp().item()])
    assert torch.allclose(cache.class_logits(query, 2.0), affinity.sum(dim=1))


def test_the_negative_read_out_weights_each_entry_by_the_classes_it_found_unlikely():
    cache = ClassCache(3, 1, 2, with_probs=True)
    cache.admit(0, torch.tensor([1.0, 0.0]), 0.1, torch.tensor([0.90, 0.08, 0.02]))
    cache.admit(2, torch.tensor([0.0, 1.0]), 0.2, torch.tensor([0.50, 0.01, 0.49]))
    query = torch.tensor([1.0, 0.0])
    a0, a2 = 1.0, torch.exp(torch.tensor(-1.0)).item()  # beta 1: exp(-(1 - q . k))
    # mask (0.03, 1.0) strictly: entry 0 counts classes 0 and 1 (0.02 is out), entry 2 classes 0 and 2
    assert cache.masked_logits(query, 1.0, 0.03, 1.0).tolist() == pytest.approx([a0 + a2, a0, a2])


# ------------------------------------------------------------------------------------------ TDA
def _views(clip, n: int, count: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, clip.image_size, clip.image_size, generator=g) for _ in range(count)]


def test_the_query_averages_the_most_confident_views_without_renormalising():
    g = torch.Generator().manual_seed(3)
    features = F.normalize(torch.randn(20, 8, generator=g), dim=-1)
    classes = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    query = tda_query(features, classes, 50.0)
    logits = 50.0 * features @ classes.t()
    entropy = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)
    kept = entropy.argsort()[:2]  # int(20 x 0.1)
    assert torch.allclose(query.feature, features[kept].mean(0)) and query.feature.norm() < 1
    assert torch.allclose(query.logits, logits[kept].mean(0)) and query.pred == int(logits[kept].mean(0).argmax())
    mean = logits[kept].softmax(-1).mean(0)
    assert torch.allclose(query.probs, mean) and torch.isclose(query.entropy, -(mean * mean.log()).sum())
    one = tda_query(features[:1], classes, 50.0)  # one view: its own
    assert torch.equal(one.feature, features[0]) and torch.allclose(one.logits, logits[0])


ONLINE = {"tda": dict(negative=dict(entropy=(0.0, 1.0))), "dmn": dict(memory_size=3),
          "boostadapter": dict(negative=dict(entropy=(0.0, 1.0)), delta=2)}
"""Each online adapter with settings that make every part of its state move on a short stream."""


def _memories(adapter) -> int:
    return len(adapter.memory) if adapter.method == "dmn" else len(adapter.pos_cache) + len(adapter.neg_cache)


@pytest.mark.parametrize("kind", sorted(ONLINE))
def test_online_state_persists_across_the_stream_and_restart_empties_it(clip, kind):
    learner = default_prompt_learner(clip, NAMES)
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    adapter = build_adapter(dict(type=kind, **ONLINE[kind]), learner)
    assert adapter.keeps_state and adapter.steps == 0
    samples = _views(clip, 20, 6)
    first = [adapter(s) for s in samples]
    if kind != "dmn":
        assert len(adapter.pos_cache) > 0 and len(adapter.neg_cache) > 0
    assert _memories(adapter) > 0
    adapter.restart()
    assert _memories(adapter) == 0 and adapter.samples_seen == 0
    assert all(torch.equal(adapter(s), f) for s, f in zip(samples, first, strict=True))  # a new run: the same
    assert all(torch.equal(before[k], v) for k, v in learner.state_dict().items())  # the learner untouched


@pytest.mark.parametrize("kind", sorted(ONLINE))
def test_a_prediction_depends_on_the_stream_before_it(kind):
    """The same sample read first and after 19 others: the memory moved its prediction (on the fidelity tests'
    features, whose samples differ as real ones do; the tiny CLIP's views are all alike)."""
    from golden_inputs import stream_inputs

    from vlprompt.adapters import ADAPTERS

    data = stream_inputs()
    views, classes = F.normalize(data["raw_views"][:, :32], dim=-1), F.normalize(data["raw_classes"], dim=-1)
    adapter = ADAPTERS.get(kind)(None, shape=(7, 512), **ONLINE[kind])
    first = adapter.infer(views[0], classes, 10.0, 0)
    for i in range(1, 20):
        adapter.infer(views[i], classes, 10.0, i)
    assert (adapter.infer(views[0], classes, 10.0, 20) - first).abs().max() > 1e-2
    adapter.restart()
    assert torch.equal(adapter.infer(views[0], classes, 10.0, 0), first)


@pytest.mark.parametrize("kind", sorted(ONLINE))
def test_a_saved_online_state_goes_on_bit_for_bit(clip, tmp_path, kind):
    from safetensors.torch import load_file, save_file

    def make():
        return build_adapter(dict(type=kind, **ONLINE[kind]), default_prompt_learner(clip, NAMES))

    samples = _views(clip, 20, 6, seed=1)
    whole = make()
    expected = [whole(s) for s in samples]
    part = make()
    for s in samples[:3]:
        part(s)
    save_file(part.carried_state(), str(tmp_path / "state.safetensors"))
    fresh = make()
    fresh.load_carried_state(load_file(str(tmp_path / "state.safetensors")))
    assert fresh.samples_seen == 3
    assert all(torch.equal(fresh(s), e) for s, e in zip(samples[3:], expected[3:], strict=True))
    missing = next(k for k in part.carried_state() if k.endswith(".features"))
    with pytest.raises(ValueError, match=missing):
        fresh.load_carried_state({k: v for k, v in part.carried_state().items() if k != missing})


def test_tda_bad_settings_are_refused_naming_them(clip):
    learner = default_prompt_learner(clip, NAMES)
    with pytest.raises(ConfigError, match=r"positive has unknown keys \['shots'\]"):
        TDA(learner, positive=dict(shots=3))
    with pytest.raises(ConfigError, match="negative.entropy"):
        TDA(learner, negative=dict(entropy=(0.5, 0.2)))
    with pytest.raises(ConfigError, match="capacity"):
        TDA(learner, positive=dict(capacity=0))


TDA_PUBLISHED = {  # kdiAAA/TDA configs/*.yaml: the positive cache's alpha and beta; views 64 on A/V/R/S
    "imagenet": (2.0, 5.0, 1), "imagenet-a": (2.0, 5.0, 64), "imagenet-v2": (1.0, 8.0, 64),
    "imagenet-r": (1.0, 8.0, 64), "imagenet-sketch": (2.363, 7.45, 64), "caltech101": (5.0, 5.0, 1),
    "dtd": (2.0, 3.0, 1), "eurosat": (4.0, 8.0, 1), "fgvc-aircraft": (2.0, 2.0, 1), "food101": (1.0, 1.0, 1),
    "oxford-flowers": (1.0, 5.0, 1), "oxford-pets": (2.0, 7.0, 1), "stanford-cars": (1.0, 7.0, 1),
    "sun397": (2.0, 3.0, 1), "ucf101": (3.0, 8.0, 1),
}


@pytest.mark.parametrize("dataset", sorted(TDA_PUBLISHED))
def test_tda_configs_give_the_published_settings(dataset):
    from vlprompt.datasets import resolve_templates
    from vlprompt.engine import load_config

    cfg = load_config(f"configs/tda/{dataset.replace('-', '_')}.py")
    alpha, beta, views = TDA_PUBLISHED[dataset]
    pos, neg = cfg.adapter.positive, cfg.adapter.negative
    assert (pos.capacity, pos.alpha, pos.beta, cfg.views.n_views) == (3, alpha, beta, views)
    assert (neg.capacity, neg.alpha, neg.beta, tuple(neg.entropy), tuple(neg.mask)) == (2, 0.117, 1.0, (0.2, 0.5),
                                                                                          (0.03, 1.0))
    templates = resolve_templates(cfg.model.learner.templates)
    expected = {"imagenet-r": 80, "imagenet-sketch": 80, "imagenet": 7, "imagenet-a": 7, "imagenet-v2": 7,
                "caltech101": 7, "stanford-cars": 7, "sun397": 7}.get(dataset, 1)
    assert len(templates) == expected
    assert cfg.stream.seed == 1


DMN_FUSION = {  # YBZh/DMN's logs (camera_ready_dmn_tf_*, ViT-B/16): the fusion weight its search found per dataset
    "imagenet": 1.0, "imagenet-a": 3.0, "imagenet-v2": 1.0, "imagenet-r": 0.3, "imagenet-sketch": 1.0,
    "oxford-flowers": 10.0, "dtd": 10.0, "oxford-pets": 1.0, "stanford-cars": 0.3, "ucf101": 0.3, "caltech101": 0.3,
    "food101": 0.3, "sun397": 3.0, "fgvc-aircraft": 1.0, "eurosat": 0.3,
}


@pytest.mark.parametrize("dataset", sorted(DMN_FUSION))
def test_dmn_configs_give_the_published_settings(dataset):
    from vlprompt.engine import load_config

    cfg = load_config(f"configs/dmn/{dataset.replace('-', '_')}.py")
    assert cfg.adapter.fusion == DMN_FUSION[dataset]
    assert (cfg.adapter.memory_size, cfg.adapter.beta, cfg.adapter.selection_p) == (50, 5.5, 0.1)
    assert (cfg.views.n_views, tuple(cfg.views.crop_scale), cfg.views.augmix) == (32, (0.5, 1.0), None)
    imagenet = dataset.startswith("imagenet")
    assert cfg.model.learner.templates == ("imagenet-select" if imagenet else "<dataset.template>") or not imagenet


def test_dmn_bad_settings_are_refused_naming_them(clip):
    from vlprompt.adapters import DMN

    learner = default_prompt_learner(clip, NAMES)
    with pytest.raises(ConfigError, match="memory_size"):
        DMN(learner, memory_size=0)
    with pytest.raises(ConfigError, match="fusion"):
        DMN(learner, fusion=-1)
    with pytest.raises(TypeError, match="shape"):
        DMN(None)


BOOST_DELTA = {  # taolinzhang/BoostAdapter configs/*.yaml (imagenet.yaml has none: one view, no boosting)
    "imagenet-a": 3, "imagenet-v2": 1, "imagenet-r": 3, "imagenet-sketch": 1, "caltech101": 2, "dtd": 0, "eurosat": 0,
    "fgvc-aircraft": 2, "food101": 3, "oxford-flowers": 0, "oxford-pets": 0, "stanford-cars": 3, "sun397": 1,
    "ucf101": 0,
}


@pytest.mark.parametrize("dataset", sorted(TDA_PUBLISHED))
def test_boostadapter_configs_are_tdas_with_the_published_boosting(dataset):
    from vlprompt.engine import load_config

    name = dataset.replace("-", "_")
    cfg, tda = load_config(f"configs/boostadapter/{name}.py"), load_config(f"configs/tda/{name}.py")
    assert cfg.adapter.type == "boostadapter" and cfg.adapter.positive == tda.adapter.positive
    assert cfg.adapter.negative == tda.adapter.negative and cfg.model.learner == tda.model.learner
    assert cfg.adapter.delta == BOOST_DELTA.get(dataset, 0)
    assert cfg.adapter.query == ("confident" if dataset.startswith("imagenet") else "original")
    assert (cfg.views.n_views, cfg.views.augmix) == (1 if dataset == "imagenet" else 64, False)


def test_a_fifo_cache_drops_its_oldest_entry():
    cache = ClassCache(2, 2, 1, with_probs=True, fifo=True)
    for value, entropy in ((1.0, 0.1), (2.0, 0.5), (3.0, 0.9)):
        cache.admit(0, torch.tensor([value]), entropy, torch.full((2,), value))
    assert cache.features[0, :, 0].tolist() == [2.0, 3.0] and cache.entropy[0].tolist() == pytest.approx([0.5, 0.9])
    assert cache.probs[0, :, 0].tolist() == [2.0, 3.0]
    wide = cache.widened(3)  # BoostAdapter's copy with delta more slots: the entries first, a free slot after
    assert wide.features[0, :2, 0].tolist() == [2.0, 3.0] and len(wide) == 2 and wide.capacity == 3


def test_training_free_adapters_score_with_the_learners_own_temperature(clip):
    """An adapter over a learner with a fixed logit scale (CLIP-LoRA, Tip-Adapter: 100) uses that scale, not the
    backbone's learned temperature: MTA's logits are the scale times the mode's cosines."""
    from vlprompt.adapters import MTA
    from vlprompt.learners import CLIPLoRA

    learner = CLIPLoRA(clip, ["dog", "cat", "red fox"], logit_scale=100.0).eval()
    assert float(clip.logit_scale) != 100.0
    adapter = MTA(learner)
    views = torch.randn(6, 3, clip.image_size, clip.image_size, generator=torch.Generator().manual_seed(0))
    logits = adapter(views)
    cosines = adapter.last_mode[None] @ adapter.class_features(None).float().t()
    torch.testing.assert_close(logits, 100.0 * cosines)
