"""Active prompt learning (PCB): the samplers on small synthetic pools, PCB's balancing, the subset
dataset, and the round loop through the engine on the toy world (2 rounds, resumption)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT
from tool_loader import load_tool

from vlprompt.active import SAMPLERS, ActiveSettings, Pool, labelled_indices, pcb_select, read_state, run_active
from vlprompt.active import loop as active_loop
from vlprompt.active.pcb import balance_entropy
from vlprompt.active.samplers import (
    badge,
    coreset,
    entropy,
    gradient_embedding_norms,
    k_center_greedy,
    k_center_greedy_torch,
    kmeanspp,
    prediction_entropy,
)
from vlprompt.errors import ConfigError


def _pool(n=60, d=8, c=5, labelled=(), seed=0):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, d)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    logits = rng.normal(size=(n, c)) * 3
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labelled = np.asarray(labelled, dtype=np.int64)
    return Pool(f, p, labelled, np.setdiff1d(np.arange(n), labelled))


# ------------------------------------------------------------------------------------------ samplers
def test_coreset_picks_the_point_farthest_from_the_labelled_set():
    # points on a line; 0 is labelled: the farthest (10) first, then the one farthest from {0, 10} (5)
    x = np.array([[0.0], [1.0], [2.0], [5.0], [10.0], [9.0]], dtype=np.float32)
    pool = Pool(x, np.full((6, 2), 0.5), [0], [1, 2, 3, 4, 5])
    assert coreset(pool, 2, np.random.default_rng(0)).tolist() == [4, 3]


def test_k_center_greedy_matches_the_plain_torch_version():
    rng = np.random.default_rng(1)
    points, centres = rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(7, 16)).astype(np.float32)
    ours = k_center_greedy(points, centres, 25)
    ref = k_center_greedy_torch(torch.from_numpy(points), torch.from_numpy(centres), 25).numpy()
    assert ours.tolist() == ref.tolist()
    assert len(set(ours.tolist())) == 25


def test_entropy_takes_the_most_uncertain_unlabelled_images():
    probs = np.array([[0.98, 0.01, 0.01], [1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1], [0.5, 0.5, 0.0]])
    pool = Pool(np.zeros((4, 2)), probs, [1], [0, 2, 3])
    picks = entropy(pool, 2, np.random.default_rng(0))
    assert picks.tolist() == [2, 3]  # image 1 (the most uncertain) is labelled already
    assert np.argmax(prediction_entropy(probs)) == 1


def test_badge_picks_are_distinct_unlabelled_and_start_at_the_largest_gradient_embedding():
    pool = _pool(n=80, labelled=range(10))
    picks = badge(pool, 30, np.random.default_rng(3))
    assert len(set(picks.tolist())) == 30
    assert set(picks.tolist()) <= set(pool.unlabelled.tolist())
    norms = gradient_embedding_norms(pool.features[pool.unlabelled], pool.probs[pool.unlabelled])
    assert picks[0] == pool.unlabelled[np.argmax(norms)]


def test_badge_distances_equal_those_of_the_dense_gradient_embeddings():
    pool = _pool(n=40, d=6, c=4)
    f, p = pool.features, pool.probs
    a = -p.copy()
    a[np.arange(len(p)), p.argmax(1)] += 1
    dense = (a[:, :, None] * f[:, None, :]).reshape(len(f), -1)  # the official (C*D)-dim embedding
    # the factorised kernel gives the same k-means++ picks as k-means++ on the dense embeddings
    torch_like = kmeanspp(dense, 12, np.random.default_rng(5))
    ours = badge(pool, 12, np.random.default_rng(5))
    assert ours.tolist() == torch_like.tolist()


def test_random_sampler_is_seeded_and_distinct():
    pool = _pool(n=50, labelled=range(5))
    a = SAMPLERS.get("random")(pool, 20, np.random.default_rng(7))
    b = SAMPLERS.get("random")(pool, 20, np.random.default_rng(7))
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 20 and min(a) >= 5


# ------------------------------------------------------------------------------------------ PCB
def test_pcb_fills_the_least_represented_class_first():
    candidates = np.array([10, 11, 12, 13, 14, 15])
    pseudo = np.array([0, 2, 1, 1, 2, 0])
    counts = np.array([2, 0, 1])  # class 1 has no labelled image, class 2 has one
    picks = pcb_select(candidates, pseudo, counts, 3, np.random.default_rng(0))
    labels = dict(zip(candidates.tolist(), pseudo.tolist(), strict=True))
    # class 1 (0 images), then class 1 again (1 image, first of the tied minimum), then class 2
    assert [labels[i] for i in picks.tolist()] == [1, 1, 2]
    assert counts.tolist() == [2, 0, 1]  # the caller's counts are not changed


def test_pcb_when_the_least_represented_class_has_no_candidate():
    candidates, pseudo = np.arange(6), np.array([1, 1, 1, 2, 2, 2])
    counts = np.array([0, 3, 0])  # class 0 is the least represented but nothing is predicted as 0
    official = pcb_select(candidates, pseudo, counts, 6, np.random.default_rng(0), exhausted="random")
    assert sorted(official.tolist()) == list(range(6))  # all random: the counts never move off class 0
    nxt = pcb_select(candidates, pseudo, counts, 2, np.random.default_rng(0), exhausted="next")
    assert pseudo[nxt].tolist() == [2, 2]  # class 2 (0 images) before class 1 (3 images)
    with pytest.raises(ValueError, match="exhausted"):
        pcb_select(candidates, pseudo, counts, 2, np.random.default_rng(0), exhausted="other")


def test_balance_entropy():
    assert balance_entropy(np.array([0, 1, 2, 3]), 4) == pytest.approx(1.0)
    assert balance_entropy(np.array([2, 2, 2]), 4) == 0.0
    assert 0 < balance_entropy(np.array([0, 0, 0, 1]), 2) < 1


def test_pcb_round_selection_proposes_a_fraction_of_the_pool():
    pool = _pool(n=200, c=5, labelled=range(5))
    labels = np.arange(200) % 5
    settings = ActiveSettings(sampler="entropy", pcb=True, candidate_fraction=0.1)
    picks, n_candidates = active_loop.select_round(1, settings, 5, pool, labels, 5, seed=1)
    assert n_candidates == 20 and len(set(picks.tolist())) == 5
    top = set(entropy(pool, 20, np.random.default_rng(0)).tolist())
    assert set(picks.tolist()) <= top  # PCB picks among the sampler's candidates


# ------------------------------------------------------------------------------------------ settings
def test_settings_name_the_bad_value():
    with pytest.raises(ConfigError, match="'margin'.*random, entropy, coreset, badge"):
        ActiveSettings(sampler="margin")
    with pytest.raises(ConfigError, match="unknown key.*budjet"):
        ActiveSettings.from_config({"budjet": 3})
    with pytest.raises(ConfigError, match="candidate_fraction"):
        ActiveSettings(candidate_fraction=0)
    assert ActiveSettings.from_config({"sampler": "badge"}, pcb=True).label == "badge+pcb"


def test_labelled_subset_checks_its_indices(tmp_path):
    from vlprompt.datasets import LabelledSubset, build_dataset

    inner = dict(type=build_dataset, name="toy-hues", split="train", progress=False)
    subset = LabelledSubset(inner, [5, 3])
    assert len(subset) == 2 and subset[1]["index"] == 3 and subset.classnames == subset.dataset.classnames
    assert subset.labels == [subset.dataset.items[5].label, subset.dataset.items[3].label]
    with pytest.raises(ConfigError, match="index 99999 is outside"):
        LabelledSubset(inner, [1, 99999])
    with pytest.raises(ConfigError, match="index 1 is listed twice"):
        LabelledSubset(inner, [1, 2, 1])


# ------------------------------------------------------------------------------------------ the round loop
FAST = {"model.backbone.name": "test-tiny", "model.backbone.pretrained": None, "train_cfg.max_epochs": 1,
        "test_dataloader.batch_size": 400, "default_hooks.logger.interval": 1}


def _cfg():
    from vlprompt.engine import load_config

    return load_config(str(ROOT / "configs/active/toy_hues.py"), None, dict(FAST))


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory):
    root = tmp_path_factory.mktemp("active")
    settings = ActiveSettings(sampler="coreset", pcb=True, rounds=2)
    state = run_active(_cfg(), root / "sweep" / settings.label / "seed3", settings, seed=3)
    return root, settings, state


def test_round_loop_trains_through_the_engine(two_rounds):
    root, settings, state = two_rounds
    assert [r["round"] for r in state["rounds"]] == [0, 1]
    assert [r["labelled"] for r in state["rounds"]] == [40, 80]
    assert state["rounds"][1]["candidates"] == 160  # 10 % of the 1,600-image pool
    labelled = labelled_indices(state)
    assert len(set(labelled)) == 80 and max(labelled) < 1600
    for r in (0, 1):
        result = json.loads((root / "sweep/coreset+pcb/seed3" / f"round{r}" / "results.json").read_text())
        assert result["labelled"] == 40 * (r + 1)
        assert result["metrics"]["accuracy/top1"] == pytest.approx(state["rounds"][r]["top1"])
        assert (root / "sweep/coreset+pcb/seed3" / f"round{r}" / "learned.safetensors").is_file()
    assert sum(state["rounds"][1]["class_counts"]) == 80
    assert read_state(root / "sweep/coreset+pcb/seed3") == state


@pytest.mark.slow  # the round loop again, cut and resumed; the two_rounds fixture trains by default
def test_an_interrupted_run_resumes_with_the_same_labelled_indices(two_rounds, monkeypatch):
    root, settings, state = two_rounds
    real = active_loop._train_round

    def fail_in_round_1(cfg, round_dir, labelled, name):
        if round_dir.name == "round1":
            raise KeyboardInterrupt  # the run is stopped while round 1 trains
        return real(cfg, round_dir, labelled, name)

    monkeypatch.setattr(active_loop, "_train_round", fail_in_round_1)
    with pytest.raises(KeyboardInterrupt):
        run_active(_cfg(), root / "cut", settings, seed=3)
    assert len(read_state(root / "cut")["rounds"]) == 1  # round 0 finished and was recorded
    monkeypatch.setattr(active_loop, "_train_round", real)
    resumed = run_active(_cfg(), root / "cut", settings, seed=3)
    assert labelled_indices(resumed) == labelled_indices(state)
    with pytest.raises(ConfigError, match=r"another settings.sampler.*active_state.json|active_state.json.*sampler"):
        run_active(_cfg(), root / "cut", ActiveSettings(sampler="badge", pcb=True, rounds=2), seed=3)


def test_the_tool_reports_the_finished_rounds(two_rounds, capsys):

    active_tool = load_tool("active")  # tools/active.py, by its file

    root, settings, state = two_rounds
    paths = active_tool.main([str(ROOT / "configs/active/toy_hues.py"), "--report-only",
                              "--work-root", str(root / "sweep")])
    table = Path(paths["table"]).read_text()
    row = next(line for line in table.splitlines() if line.startswith("| coreset+pcb |"))
    assert f"{state['rounds'][1]['top1']:.2f} ± 0.00" in row and "r1 (80)" in table
    assert "| random |" not in table  # strategies with no run are left out
    assert Path(paths["plot"]).stat().st_size > 10_000
    csv_rows = Path(paths["csv"]).read_text().splitlines()
    assert csv_rows[0].startswith("strategy,round,labelled") and len(csv_rows) == 3


def test_a_config_without_a_labelled_subset_is_refused_before_any_work(tmp_path):
    from vlprompt.engine import load_config

    cfg = load_config(str(ROOT / "configs/coop/toy_hues.py"), None, {})
    with pytest.raises(ConfigError, match="LabelledSubset"):
        run_active(cfg, tmp_path / "run", ActiveSettings())


# ------------------------------------------------------------------------------------------ description augmentation
DESCRIBED = {"sea_lion": ["a marine mammal with flippers", "loud and barking"], "red fox": ["a small wild canid"]}
NAMES = ["sea_lion", "red fox", "axolotl"]  # the axolotl has no description: it keeps "{class}."


def _row_learner(clip, ctx):
    """A plain CoOp whose class names are the rendered description rows, sharing ``ctx``."""
    from vlprompt.learners import build_learner

    rows = ["sea lion, which is/has a marine mammal with flippers", "sea lion, which is/has loud and barking",
            "red fox, which is/has a small wild canid", "axolotl"]
    plain = build_learner("coop", clip, rows, n_ctx=4, ctx_init="")
    plain.ctx.data.copy_(ctx)
    return plain


@pytest.mark.parametrize("mode", ["AE", "AS"])
def test_coop_description_augmentation_averages_as_the_official_code(clip, mode):
    from vlprompt.learners import build_learner

    torch.manual_seed(0)
    coop = build_learner("coop", clip, NAMES, n_ctx=4, ctx_init="", descriptions=dict(descriptions=DESCRIBED),
                         description_mode=mode, on_missing="ignore")
    assert coop.prompt_owner.tolist() == [0, 0, 1, 2]
    plain = _row_learner(clip, coop.ctx.detach())
    assert torch.equal(coop.class_token_ids, plain.class_token_ids)  # the same four prompts
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        f = coop.encode_images(images)
        got = coop.logits(f, coop.encode_classes())
        if mode == "AE":  # the normalised mean of the unnormalised row features
            raw = clip.encode_text(plain.class_token_ids, plain.text_prompts(plain.ctx))
            classes = torch.nn.functional.normalize(torch.stack([raw[:2].mean(0), raw[2], raw[3]]), dim=-1)
            want = clip.logit_scale * f @ classes.t()
        else:  # the mean of the rows' logits
            rows = plain.logits(f, plain.encode_classes())
            want = torch.stack([rows[:, :2].mean(1), rows[:, 2], rows[:, 3]], dim=1)
    assert got.shape == (3, 3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert coop.hparams()["description_mode"] == mode


def test_coop_descriptions_with_class_specific_contexts_give_each_row_its_class_context(clip):
    from vlprompt.learners import build_learner

    coop = build_learner("coop", clip, NAMES, n_ctx=4, ctx_init="", class_specific=True,
                         descriptions=dict(descriptions=DESCRIBED), description_mode="AS", on_missing="ignore")
    loss = coop.loss(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))["loss_ce"]
    loss.backward()
    assert coop.ctx.grad.shape == (3, 4, clip.text_width) and (coop.ctx.grad.abs().sum((1, 2)) > 0).all()
    with pytest.raises(ValueError, match="class_token_position"):
        build_learner("coop", clip, NAMES, descriptions=dict(descriptions=DESCRIBED), class_token_position="front")


@pytest.mark.parametrize("mode", ["as", "ae"])
def test_the_description_configs_build_coop_over_the_toy_descriptions(mode):
    from vlprompt.datasets import build_dataset
    from vlprompt.engine import PromptModel, load_config

    cfg = load_config(str(ROOT / f"configs/active/descriptions/toy_hues_{mode}.py"), None, None)
    names = build_dataset("toy-hues", split="train", progress=False).classnames
    model = PromptModel(backbone=cfg.model.backbone, learner=cfg.model.learner, class_names=names)
    assert model.learner.description_mode == mode.upper()
    assert sorted(set(model.learner.prompt_owner.tolist())) == list(range(len(names)))  # every class described
    assert cfg.train_dataloader.dataset.dataset.name == "toy-hues"


def test_a_report_of_an_empty_folder_is_one_clear_error(tmp_path):
    from vlprompt.active.report import ResultsNotFoundError, write_report

    with pytest.raises(ResultsNotFoundError, match=r"no finished active-learning round under .*seed<S>"):
        write_report(tmp_path)
