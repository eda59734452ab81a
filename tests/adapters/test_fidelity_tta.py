"""TPT and RLCF (prompt and image-encoder variants) against the official test-time loops (fp32, CPU).

``tests/golden/official_tpt_rlcf.json`` holds what azshue/TPT and mzhaoshuai/RLCF computed (its
NOTE says how) for a seeded random ViT-B/16 student, a seeded random ViT-B/16 teacher, 64 seeded
random views used directly as one sample's augmented batch (view 0 the original) and 7 class names,
at the official default hyper-parameters: the view logits of the first forward, the selected views,
every step's sampled classes, CLIPScores, baselines, advantages and policy loss, the tuned tensors
after each step, and the logits of view 0 after adaptation. Here vlprompt's adapters run on the
same inputs; the tuned tensors are read after each step by an optimizer hook.

The RLCF image-encoder variant's golden numbers keep an official quirk: its text is
``"a_photo_of_a {class}."`` (the ``--ctx_init`` flag is used as the prompt prefix unchanged), so
that is the template given here to the fixed class features and to the teacher.

About 4 minutes on 2 CPU cores (several 64-view ViT-B/16 passes and 3 backward passes through the
image tower), hence ``slow``.
"""

import json

import pytest
import torch
from helpers import GOLDEN_DIR
from seeded_models import seeded_vitb16

from vlprompt.adapters import CTPT, RLCF, TPT, default_prompt_learner
from vlprompt.learners import ZeroShotCLIP

pytestmark = pytest.mark.slow

GOLDEN = json.loads((GOLDEN_DIR / "official_tpt_rlcf.json").read_text())
CTPT_GOLDEN = json.loads((GOLDEN_DIR / "official_ctpt.json").read_text())  # the same student and views (its NOTE)
NAMES = GOLDEN["inputs"]["classnames"]
TOL = 1e-4  # logits and losses, max abs difference


@pytest.fixture(scope="module")
def student():
    return seeded_vitb16(0, GOLDEN["weights"]["student"]["float_sum"])


@pytest.fixture(scope="module")
def teacher():
    return seeded_vitb16(2, GOLDEN["weights"]["teacher"]["float_sum"])


@pytest.fixture(scope="module")
def views():
    torch.manual_seed(1)
    views = torch.randn(64, 3, 224, 224)
    ref = GOLDEN["inputs"]["views"]
    assert views.double().sum().item() == pytest.approx(ref["sum"], rel=1e-12)
    return views


def summary(t: torch.Tensor) -> dict:
    t = t.detach().double()
    return {"shape": list(t.shape), "sum": t.sum().item(), "abs_sum": t.abs().sum().item(),
            "first8": t.flatten()[:8].tolist()}


def assert_summary(ours: dict, ref: dict, what: str, atol: float = 1e-6, rel_sum: float = 1e-5) -> None:
    """Shape, first 8 values (``atol``) and sum / abs_sum (``rel_sum`` x abs_sum) against a golden summary."""
    assert ours["shape"] == ref["shape"], what
    diff = max(abs(a - b) for a, b in zip(ours["first8"], ref["first8"], strict=True))
    assert diff <= atol, f"{what}: first values differ by {diff:.3g}"
    for key in ("sum", "abs_sum"):
        assert abs(ours[key] - ref[key]) <= rel_sum * ref["abs_sum"] + 1e-9, (
            f"{what}: {key} {ours[key]!r} vs official {ref[key]!r}")


def max_diff(ours, ref) -> float:
    return (torch.as_tensor(ours, dtype=torch.float64) - torch.tensor(ref, dtype=torch.float64)).abs().max().item()


def _record_steps(adapter, record) -> None:
    """Call ``record(adapter)`` after every optimizer step."""
    adapter.optimizer.register_step_post_hook(lambda *_: record(adapter))


class _SameViewFeatures:
    """The prompt runs share one student: the features of the (unchanging) views are computed once.

    TPT and RLCF's prompt variant tune only text context, so the image features of the 64 views are
    a function of the frozen backbone and the views alone; the first run computes them, the second
    reads them back (each run still checks the resulting view logits against the official ones).
    """

    def __init__(self, learner) -> None:
        self.encode, self.cache = learner.encode_images, {}
        learner.encode_images = self

    def __call__(self, images):
        key = (id(images), images.shape)
        if key not in self.cache:
            self.cache[key] = self.encode(images)
        return self.cache[key]


@pytest.fixture(scope="module")
def prompt_learner(student):
    learner = default_prompt_learner(student, NAMES)
    _SameViewFeatures(learner)
    return learner


@pytest.fixture(scope="module")
def tpt_run(prompt_learner, views):
    adapter = TPT(prompt_learner)
    ctx = []
    _record_steps(adapter, lambda a: ctx.append(a.learner.ctx.detach().clone()))
    start = prompt_learner.ctx.detach().clone()
    logits = adapter(views)
    return adapter, start, ctx, logits


@pytest.fixture(scope="module")
def rlcf_prompt_run(prompt_learner, teacher, views, tpt_run):
    adapter = RLCF(prompt_learner, teacher)
    ctx = []
    _record_steps(adapter, lambda a: ctx.append(a.learner.ctx.detach().clone()))
    start = prompt_learner.ctx.detach().clone()
    logits = adapter(views)
    return adapter, start, ctx, logits


@pytest.fixture(scope="module")
def rlcf_image_run(student, teacher, views):
    template = "a_photo_of_a {}."  # the official image-encoder variant's text (see the module docstring)
    adapter = RLCF(ZeroShotCLIP(student, NAMES, template), teacher, variant="image", template=template)
    visual = adapter.student.visual
    previous = {k: v.detach().clone() for k, v in visual.state_dict().items()}
    start = dict(previous)
    steps = []

    def record(a):
        state = visual.state_dict()
        change = sum((state[k].double() - previous[k].double()).abs().sum().item() for k in state)
        from_start = sum((state[k].double() - start[k].double()).abs().sum().item() for k in state)
        previous.update({k: v.detach().clone() for k, v in state.items()})
        with torch.no_grad():  # the prediction after this step (the golden one_step ends after step 1)
            view0 = a.student.predict()
        steps.append(dict(conv1=summary(visual.conv1.weight), proj=summary(visual.proj), change=change,
                          from_start=from_start, view0=view0))

    _record_steps(adapter, record)
    logits = adapter(views)
    return adapter, start, steps, logits


# ----------------------------------------------------------------------------------------------- TPT
def test_tpt_prompts_and_initial_context_are_the_official_ones(tpt_run):
    adapter, start, _, _ = tpt_run
    gold = GOLDEN["tpt"]
    assert_summary(summary(start), gold["ctx_init"], "ctx init")
    ids = adapter.learner.class_token_ids
    for row, ref in zip(ids.tolist(), gold["tokenized_prompts"], strict=True):
        assert [t for t in row if t] == ref[:1] + ref[5:], "class prompt without the 4 context words"


def test_tpt_selection_loss_update_and_prediction_match_the_official_loop(tpt_run):
    adapter, start, ctx, logits = tpt_run
    gold = GOLDEN["tpt"]
    assert max_diff(adapter.last_view_logits, gold["views_logits_before"]) < TOL
    assert adapter.last_selected.tolist() == gold["selected_idx"]
    assert len(adapter.last_losses) == gold["hparams"]["tta_steps"] == 1
    assert abs(adapter.last_losses[0].item() - gold["marginal_entropy_loss"]) < TOL
    assert_summary(summary(ctx[0]), gold["ctx_after_step1"], "ctx after the step")
    assert_summary(summary(ctx[0] - start), gold["ctx_delta_step1"], "ctx update", rel_sum=1e-4)
    assert max_diff(logits[0], gold["final_logits_view0"]) < TOL
    assert torch.equal(adapter.learner.ctx, start), "episodic: reset after the sample"


# ------------------------------------------------------------------------------------- C-TPT
@pytest.fixture(scope="module")
def ctpt_learner(student, prompt_learner):
    learner = default_prompt_learner(student, CTPT_GOLDEN["classnames"])
    _SameViewFeatures(learner).cache = prompt_learner.encode_images.cache  # one student: the same view features
    return learner


@pytest.mark.parametrize("weight", [50, 20])
def test_ctpt_terms_update_and_prediction_match_the_official_loop(ctpt_learner, views, weight):
    """C-TPT's entropy and text-dispersion terms, its loss, the tuned context and the prediction, at the two
    published weights (hee-suk-yoon/C-TPT's fine-grained and ImageNet-shift scripts)."""
    gold = CTPT_GOLDEN[f"lambda_{weight}"]
    adapter = CTPT(ctpt_learner, atfd_weight=weight)
    ctx = []
    _record_steps(adapter, lambda a: ctx.append(a.learner.ctx.detach().clone()))
    start = ctpt_learner.ctx.detach().clone()
    assert_summary(summary(start), gold["ctx_init"], "ctx init")
    logits = adapter(views)
    assert max_diff(adapter.last_view_logits, gold["views_logits_init"]) < TOL
    assert adapter.last_selected.tolist() == gold["selected_idx"]
    entropy, dispersion = adapter.last_terms
    assert abs(entropy.item() - gold["entropy_term"]) < TOL and abs(dispersion.item() - gold["atfd_term"]) < TOL
    assert abs(adapter.last_losses[0].item() - gold["total_loss"]) < TOL
    assert_summary(summary(ctx[0]), gold["ctx_after_step1"], "ctx after the step")
    assert max_diff(logits[0], gold["final_logits_view0"]) < TOL
    assert torch.equal(ctpt_learner.ctx, start), "episodic: reset after the sample"


# ------------------------------------------------------------------------------------- RLCF (prompt)
def test_rlcf_teacher_features_match_the_official_reward_model(rlcf_prompt_run, views):
    adapter, _, _, _ = rlcf_prompt_run
    gold = GOLDEN["rlcf_prompt"]
    teacher = adapter.reward.teachers[0]
    assert_summary(summary(teacher.class_features(NAMES)), gold["teacher_class_features"], "teacher text")
    selected = torch.tensor(gold["selected_idx"])
    assert_summary(summary(teacher.image_features(views[selected])), gold["teacher_image_features_selected"],
                   "teacher images")


def _assert_rlcf_steps(adapter, gold_steps, what):
    assert len(adapter.last_losses) == len(gold_steps)
    for i, ref in enumerate(gold_steps):
        step = f"{what} step {i + 1}"
        assert adapter.last_samples[i].tolist() == ref["sampled_class_idx"], step
        rewards, baselines = adapter.last_rewards[i], adapter.last_baselines[i]
        assert max_diff(rewards, ref["clip_score"]) < 1e-6, f"{step}: CLIPScores"
        assert max_diff(baselines[:, 0], ref["baseline"]) < 1e-6, f"{step}: baselines"
        assert max_diff((rewards - baselines).flatten(), ref["rewards"]) < 1e-6, f"{step}: advantages"
        assert abs(adapter.last_losses[i].item() - ref["policy_loss"]) < 1e-6, f"{step}: policy loss"


def test_rlcf_prompt_steps_updates_and_prediction_match_the_official_loop(rlcf_prompt_run):
    adapter, start, ctx, logits = rlcf_prompt_run
    gold = GOLDEN["rlcf_prompt"]
    assert_summary(summary(start), gold["ctx_init"], "ctx init")
    assert max_diff(adapter.last_view_logits, gold["views_logits_before"]) < TOL
    assert adapter.last_selected.tolist() == gold["selected_idx"]
    _assert_rlcf_steps(adapter, gold["steps"], "prompt")
    for i, ref in enumerate(gold["steps"]):
        assert_summary(summary(ctx[i]), ref["ctx_after"], f"ctx after step {i + 1}")
    assert max_diff(logits[0], gold["final_logits_view0"]) < TOL
    assert torch.equal(adapter.learner.ctx, start), "episodic: reset after the sample"


# -------------------------------------------------------------------------------- RLCF (image encoder)
def test_rlcf_image_encoder_text_features_match_the_official_ones(rlcf_image_run):
    adapter, _, _, _ = rlcf_image_run
    gold = GOLDEN["rlcf_image_encoder"]
    assert_summary(summary(adapter.student.class_features()), gold["student_class_features"], "student text")
    teacher = adapter.reward.teachers[0].class_features(NAMES)
    assert_summary(summary(teacher), gold["teacher_class_features"], "teacher text")
    ids = adapter.learner.class_token_ids
    assert [[t for t in row if t] for row in ids.tolist()] == gold["tokenized_prompts"]


def test_rlcf_image_encoder_steps_updates_and_prediction_match_the_official_loop(rlcf_image_run, student):
    adapter, start, steps, logits = rlcf_image_run
    gold = GOLDEN["rlcf_image_encoder"]
    one, three = gold["one_step"], gold["three_steps"]
    assert one["selected_idx"] == three["selected_idx"] == adapter.last_selected.tolist()
    assert max_diff(adapter.last_view_logits, three["views_logits_before"]) < TOL
    _assert_rlcf_steps(adapter, three["steps"], "image encoder")
    assert abs(one["policy_loss"][0] - three["policy_loss"][0]) == 0
    for i, ref in enumerate(three["steps"]):
        ours = steps[i]
        what = f"step {i + 1}"
        # the updates are about lr = 1e-5 per weight: compare them, not the weights
        for name, key in (("conv1", "conv1_weight_after"), ("proj", "proj_after")):
            init = start["conv1.weight" if name == "conv1" else "proj"].double().flatten()[:8]
            delta = torch.tensor(ours[name]["first8"], dtype=torch.float64) - init
            ref_delta = torch.tensor(ref[key]["first8"], dtype=torch.float64) - init
            assert (delta - ref_delta).abs().max().item() < 1e-8, f"{what}: {name} update"
            assert_summary(ours[name], ref[key], f"{what}: {name}", atol=1e-8, rel_sum=1e-6)
        assert ours["change"] == pytest.approx(ref["visual_abs_change_sum"], rel=1e-3), f"{what}: total |update|"
        assert ours["from_start"] == pytest.approx(ref["visual_abs_change_sum_from_init"], rel=1e-3), what
    assert max_diff(steps[0]["view0"][0], one["final_logits_view0"]) < TOL
    assert max_diff(logits[0], three["final_logits_view0"]) < TOL
    # the shared backbone never moved, and the adapter's copy is back at the start
    assert torch.equal(student.model.visual.conv1.weight, start["conv1.weight"])
    assert all(torch.equal(v, start[k]) for k, v in adapter.student.visual.state_dict().items())
