"""Tip-Adapter and Tip-Adapter-F against numbers from the official code (gaopengcuhk/Tip-Adapter@d0e2d6f, fp32, CPU).

``tests/golden/official_tip_adapter.json`` holds what the official ``build_cache_model``, ``clip_classifier``,
``search_hp``, ``run_tip_adapter`` and ``run_tip_adapter_F`` computed (its NOTE says how) for the seeded random
ViT-B/16, 7 class names as the split files spell them, a 2-shot cache over 3 augmentation passes of seeded random
images, and seeded validation and test images. Here vlprompt builds the same cache from the same tensors and
must reproduce the class features, the cache, the logits, the grid search (its first-maximum rule) and 3 AdamW
steps of the keys under the configs' optimiser and schedule.
"""

import json

import pytest
import torch
from helpers import GOLDEN_DIR
from mmengine.config import Config
from mmengine.optim import CosineAnnealingLR
from seeded_models import assert_summary, max_diff, seeded_vitb16

from vlprompt.learners import TipAdapter
from vlprompt.learners.tip_adapter import search_grid

GOLDEN = json.loads((GOLDEN_DIR / "official_tip_adapter.json").read_text())
TOL = 1e-4  # logits and losses (x100 logits), max abs difference


def images(seed: int, n: int) -> torch.Tensor:
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def clip():
    return seeded_vitb16(0, GOLDEN["weights"]["float_sum"])


def fresh(clip, **settings) -> TipAdapter:
    cfg = GOLDEN["cfg"]
    learner = TipAdapter(clip, GOLDEN["classnames"], templates=GOLDEN["template"], alpha=cfg["init_alpha"],
                         beta=cfg["init_beta"], augment_epochs=cfg["augment_epoch"], **settings)
    labels = torch.tensor(GOLDEN["train_labels"])
    passes = iter(range(cfg["augment_epoch"]))
    with torch.no_grad():
        learner.build_cache(lambda: iter([(images(100 + next(passes), len(labels)), labels)]))
    return learner


@pytest.fixture(scope="module")
def tip(clip):
    return fresh(clip)


@pytest.fixture(scope="module")
def test_set(tip):
    return tip.encode_images(images(8, len(GOLDEN["test_labels"]))), torch.tensor(GOLDEN["test_labels"])


def test_class_features_and_cache_match(tip):
    assert_summary(tip.class_features.t(), GOLDEN["clip_weights"], "clip_weights")
    assert_summary(tip.cache_keys.t(), GOLDEN["cache_keys"], "cache_keys (averaged, then normalised)")
    assert torch.equal(tip.cache_values, torch.tensor(GOLDEN["cache_values"]["values"]))
    assert tip.cache_classes == GOLDEN["classnames"]


def test_zero_shot_and_tip_logits_match(tip, test_set):
    features, _ = test_set
    assert_summary(features, GOLDEN["test_features"], "test features")
    assert max_diff(tip.tip_logits(features, alpha=0.0), GOLDEN["zero_shot_test_logits"]["values"]) < TOL
    init = GOLDEN["tip_test_logits_init"]
    assert max_diff(tip.tip_logits(features, alpha=init["alpha"], beta=init["beta"]), init["values"]) < TOL


@pytest.mark.slow  # two grid searches over ViT-B/16 features of 24 more images (10 s on 2 cores)
def test_search_is_the_official_grid_and_first_maximum(tip, test_set):
    for search in ("search_val", "search_selfval"):
        ref = GOLDEN[search]
        assert search_grid(ref["search_scale"][0], ref["search_step"][0]) == pytest.approx(ref["beta_list"])
        assert search_grid(ref["search_scale"][1], ref["search_step"][1]) == pytest.approx(ref["alpha_list"])
    # the prescribed validation search: no grid point is right on these random weights -> (0, 0), as officially
    tip.search_scale, tip.search_step = GOLDEN["search_val"]["search_scale"], GOLDEN["search_val"]["search_step"]
    val = tip.encode_images(images(7, len(GOLDEN["val_labels"]))), torch.tensor(GOLDEN["val_labels"])
    assert tip.search_alpha_beta(*val) == (0.0, 0.0, 0.0)
    # a search with 57 ties at 100%: the first in beta-major order wins (index 78: beta 17.565, alpha 40.02)
    ref = GOLDEN["search_selfval"]
    tip.search_scale, tip.search_step = ref["search_scale"], ref["search_step"]
    selfval = tip.encode_images(images(100, len(GOLDEN["train_labels"]))), torch.tensor(GOLDEN["train_labels"])
    assert_summary(selfval[0], ref["val_features"], "self-validation features")
    beta, alpha, acc = tip.search_alpha_beta(*selfval)
    assert (beta, alpha, acc) == (pytest.approx(ref["best_beta"]), pytest.approx(ref["best_alpha"]), ref["best_acc"])
    # alpha 40 and beta 17.6 amplify the encoders' fp32 differences (test features 1e-7 apart): these logits
    # (about 65) agree to 4e-6 relative, not 1e-4 absolute
    searched = torch.tensor(ref["test_logits_searched"])
    assert max_diff(tip.tip_logits(test_set[0], alpha=alpha, beta=beta), searched) < 1e-5 * searched.abs().max()


@pytest.mark.slow  # 3 more passes of the ViT-B/16 image tower (13 s on 2 cores)
def test_three_adamw_steps_of_the_keys_under_the_configs_recipe_match(clip, tip, test_set):
    learner = TipAdapter(clip, GOLDEN["classnames"], templates=GOLDEN["template"], alpha=GOLDEN["cfg"]["init_alpha"],
                         beta=GOLDEN["cfg"]["init_beta"])
    learner.load_state_dict(tip.state_dict())  # the same cache, as a resumed run loads it
    assert learner.cache_classes == GOLDEN["classnames"]
    recipe = Config.fromfile(str(GOLDEN_DIR.parent.parent / "configs" / "tip_adapter_f" / "_method.py"))
    settings = dict(recipe.optim_wrapper.optimizer)
    official = GOLDEN["tip_adapter_f"]["optimizer"]
    keys = ("lr", "eps", "weight_decay")
    assert {k: settings[k] for k in keys} == {k: official[k] for k in keys}
    optimizer = torch.optim.AdamW([learner.cache_keys], lr=settings["lr"], eps=settings["eps"],
                                  weight_decay=settings["weight_decay"])
    epochs = GOLDEN["cfg"]["train_epoch"]
    assert recipe.train_cfg.max_epochs == epochs and recipe.param_scheduler.eta_min == 0
    scheduler = CosineAnnealingLR(optimizer, eta_min=0, by_epoch=False, T_max=epochs)  # one step an epoch here
    labels = torch.tensor(GOLDEN["train_labels"])
    # epoch t trains on the cache's augmentation pass t % 3; the frozen image tower's features, encoded once
    features = [learner.encode_images(images(100 + e, len(labels))) for e in range(3)]
    learner.train()
    first = learner.loss(images(100, len(labels)), labels)["loss_ce"]
    torch.testing.assert_close(first, torch.nn.functional.cross_entropy(learner.tip_logits(features[0]), labels))
    for t, step in enumerate(GOLDEN["tip_adapter_f"]["steps"]):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(step["lr_used"], rel=1e-9)
        logits = learner.tip_logits(features[t % 3])
        assert max_diff(logits, step["train_logits"]) < TOL
        loss = torch.nn.functional.cross_entropy(logits, labels)
        assert abs(loss.item() - step["loss"]) < TOL, f"loss of step {t + 1}"
        optimizer.zero_grad()
        loss.backward()
        if t == 0:
            assert_summary(learner.cache_keys.grad, GOLDEN["tip_adapter_f"]["grad_step1"], "gradient of the keys",
                           atol=1e-7, rtol=1e-4)
        optimizer.step()
        scheduler.step()
    assert_summary(learner.cache_keys, GOLDEN["tip_adapter_f"]["adapter_weight_after_3_steps"], "keys after 3 steps",
                   atol=1e-7, rtol=1e-5)
    learner.eval()
    ref = GOLDEN["tip_adapter_f"]["test_logits_after_3_steps_init_hp"]
    assert max_diff(learner.tip_logits(test_set[0], alpha=ref["alpha"], beta=ref["beta"]), ref["values"]) < TOL
