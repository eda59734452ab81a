"""DePT's plug-in semantics on the tiny CLIP: which class sets the head serves, its loss, its learning rate and
its learned files (the numbers themselves are checked against the official code in test_fidelity_dept.py)."""

import json
import uuid

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import build_optim_wrapper
from tool_loader import load_tool

from vlprompt.engine import load_config
from vlprompt.learners import DePTCoCoOp, DePTCoOp, DePTKgCoOp, DePTMaPLe, DePTPromptSRC

NAMES = ["dog", "golden retriever", "annual crop land", "red fox", "pizza"]
train_tool = load_tool("train")


@pytest.fixture(scope="module")
def clip():
    from vlprompt.backbones import build_clip

    torch.manual_seed(0)
    return build_clip("test-tiny")


def _images(clip, n=4, seed=1):
    return torch.randn(n, 3, clip.image_size, clip.image_size, generator=torch.Generator().manual_seed(seed))


def _perturbed(learner):
    with torch.no_grad():  # away from the identity, so a head skipped or misplaced shows
        for p in learner.dept_head.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.3)
    return learner.eval()


@pytest.mark.parametrize("cls", [DePTCoOp, DePTCoCoOp, DePTKgCoOp, DePTMaPLe, DePTPromptSRC])
def test_the_head_serves_its_own_classes_in_any_order_and_subset_and_no_other(clip, cls):
    learner = _perturbed(cls(clip, NAMES))
    images = _images(clip)
    with torch.no_grad():
        raw = learner.encode_images(images, normalize=False)
        prompt = learner.class_logits(F.normalize(raw, dim=-1))
        head = learner.dept_head.linear(learner.dept_head.image(raw))
        torch.testing.assert_close(learner(images), 0.3 * prompt + 0.7 * head)
        subset = [NAMES[3], NAMES[0]]  # ImageNet-A/R: some of the head's classes, in their own order
        learner.set_classes(subset)
        fused = learner(images)
        prompt = learner.class_logits(F.normalize(raw, dim=-1))
        torch.testing.assert_close(fused, 0.3 * prompt + 0.7 * head[:, [3, 0]])
        learner.set_classes(["cat", "dog"])  # one class the head never saw: the prompt branch alone
        torch.testing.assert_close(learner(images), learner.class_logits(F.normalize(raw, dim=-1)))


def test_the_loss_is_both_branches_weighted_plus_the_learners_own_terms(clip):
    learner = _perturbed(DePTKgCoOp(clip, NAMES, w=2.0)).train()
    images, labels = _images(clip), torch.tensor([0, 4, 2, 4])
    terms = learner.loss(images, labels)
    assert set(terms) == {"loss_ce", "loss_dept", "loss_kg"}
    raw_i = learner.encode_images(images, normalize=False)
    raw_t = learner.encode_classes(normalize=False)
    logits = learner.logits(F.normalize(raw_i, dim=-1), F.normalize(raw_t, dim=-1))
    head = learner.dept_head
    rows = head.linear(torch.cat([head.text(raw_t[labels]), head.image(raw_i)]))
    torch.testing.assert_close(terms["loss_ce"], 0.3 * F.cross_entropy(logits, labels))
    torch.testing.assert_close(terms["loss_dept"], 0.7 * F.cross_entropy(rows, torch.cat([labels, labels])))
    learner.set_classes(["cat", "dog"])
    with pytest.raises(ValueError, match="trains its head on its own classes"):
        learner.loss(images, torch.tensor([0, 1, 0, 1]))


def test_the_configs_give_the_head_six_and_a_half_times_the_prompts_learning_rate(clip):
    cfg = load_config("configs/dept/coop/toy-shapes.py")
    learner = DePTCoOp(clip, NAMES, **{k: v for k, v in cfg.model.learner.items() if k != "type"})
    groups = build_optim_wrapper(learner, cfg.optim_wrapper).optimizer.param_groups
    lr = {name: g["lr"] for g in groups for name, p in learner.named_parameters() if any(p is q for q in g["params"])}
    assert lr["ctx"] == cfg.optim_wrapper.optimizer.lr == 0.0035
    assert [lr[n] for n in lr if n.startswith("dept_head.")] == [pytest.approx(0.0035 * 6.5)] * 6


def test_a_learned_file_brings_its_head_and_its_classes(clip, tmp_path):
    from vlprompt.backbones import save_safetensors
    from vlprompt.learned import load_learned_into

    trained = _perturbed(DePTCoOp(clip, NAMES, n_ctx=4))
    meta = {"learner": {"type": "dept_coop", **trained.hparams()}}
    path = tmp_path / "learned.safetensors"
    save_safetensors(trained.learned_state_dict(), path, {"vlprompt": json.dumps(meta)})
    novel = DePTCoOp(clip, ["cat", "pizza", "dog"], n_ctx=4)  # a config's learner on other classes
    load_learned_into(novel, path)
    assert novel.head_classes == NAMES
    novel.eval().set_classes(NAMES[:2])
    trained.set_classes(NAMES[:2])
    images = _images(clip)
    with torch.no_grad():
        torch.testing.assert_close(novel(images), trained(images))
    meta["learner"]["head_classes"] = NAMES[:2]  # fewer names than the head's rows
    save_safetensors(trained.learned_state_dict(), path, {"vlprompt": json.dumps(meta)})
    with pytest.raises(ValueError, match=f"{path}: learner.head_classes must name the 5 rows"):
        load_learned_into(DePTCoOp(clip, NAMES, n_ctx=4), path)


def test_a_base_to_novel_run_fuses_on_base_and_uses_the_prompts_on_novel(tmp_path):
    from vlprompt import load_prompted_clip

    train_tool.main(["--method", "dept/coop", "--dataset", "toy-shapes", "--work-dir", str(tmp_path),
                     "--cfg-options", "model.backbone.name=test-tiny", "model.backbone.pretrained=None",
                     "train_dataloader.dataset.num_shots=1", "train_cfg.max_epochs=1",
                     f"experiment_name=dept_{uuid.uuid4().hex[:8]}"])
    clf = load_prompted_clip(tmp_path / "learned.safetensors")
    base = clf.learner.head_classes
    from vlprompt.datasets import build_dataset

    assert base == clf.learner.class_names == build_dataset("toy-shapes", split="test", subsample="base").classnames
    assert clf.learner.head_rows is not None
    clf.learner.set_classes(["a novel shape"])
    assert clf.learner.head_rows is None
