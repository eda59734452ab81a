"""PromptKD's student on tiny CLIPs: its teachers, its loss, its state and a run (the numbers themselves are checked
against the official code in test_fidelity_promptkd.py)."""

import json
import uuid

import pytest
import torch
import torch.nn.functional as F
from tool_loader import load_tool

from vlprompt.backbones import build_clip, save_safetensors
from vlprompt.learners import CoCoOp, CoOp, PromptKD

NAMES = ["dog", "golden retriever", "annual crop land"]
train_tool = load_tool("train")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A seeded tiny CLIP's weights in a file: the teacher's backbone, the same at every build."""
    path = tmp_path_factory.mktemp("teacher") / "tiny.pt"
    torch.manual_seed(5)
    torch.save(build_clip("test-tiny").model.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return build_clip("test-tiny")


def _images(clip, n=4):
    return torch.randn(n, 3, clip.image_size, clip.image_size, generator=torch.Generator().manual_seed(3))


def _teacher_file(weights, tmp_path, learner_type="coop"):
    """A trained-looking teacher: a CoOp on the weights file, saved as a learned file."""
    backbone = dict(name="test-tiny", pretrained=weights, quick_gelu=True)
    teacher = CoOp(backbone, NAMES, n_ctx=2)
    with torch.no_grad():
        teacher.ctx.normal_(generator=torch.Generator().manual_seed(4))
    meta = {"learner": {"type": learner_type, **teacher.hparams()}, "backbone": backbone, "class_names": NAMES}
    path = tmp_path / f"{learner_type}.safetensors"
    save_safetensors(teacher.learned_state_dict(), path, {"vlprompt": json.dumps(meta)})
    return teacher, path


def test_a_learned_teacher_gives_the_class_features_and_the_targets(clip, weights, tmp_path):
    teacher, path = _teacher_file(weights, tmp_path)
    student = PromptKD(clip, NAMES, teacher=str(path))
    with torch.no_grad():
        torch.testing.assert_close(student.encode_classes(), teacher.eval().encode_classes())
        images = _images(clip)
        torch.testing.assert_close(student.teacher_logits(images), teacher(images))
        student.set_classes(["cat", "red fox"])  # novel classes: the teacher's features for them
        teacher.set_classes(["cat", "red fox"])
        torch.testing.assert_close(student.encode_classes(), teacher.encode_classes())
    assert not any(k.startswith(("teacher", "_teacher")) for k in student.state_dict())
    assert student.hparams()["teacher"] == str(path)


def test_the_loss_is_the_weighted_mean_kl_from_teacher_to_student_and_ignores_labels(clip, weights):
    student = PromptKD(clip, NAMES, teacher=dict(name="test-tiny", pretrained=weights, quick_gelu=True),
                       kd_weight=7.0, temperature=2.0).train()
    images = _images(clip)
    terms = student.loss(images, torch.tensor([0, 1, 2, 0]))
    assert set(terms) == {"loss_kd"}
    other = student.loss(images, torch.tensor([2, 2, 2, 2]))
    stats = {k: v.clone() for k, v in student.projector.norm.state_dict().items()}
    s = student.logits(student.encode_images(images), student.teacher_class_features) / 2.0
    t = student.teacher_logits(images) / 2.0
    kl = (t.softmax(-1) * (t.log_softmax(-1) - s.log_softmax(-1))).sum() / s.numel()
    torch.testing.assert_close(terms["loss_kd"], 7.0 * 4.0 * kl)
    torch.testing.assert_close(other["loss_kd"], terms["loss_kd"])
    assert not torch.equal(stats["running_mean"], torch.zeros_like(stats["running_mean"]))  # the batch counted


def test_training_moves_the_student_and_never_the_teacher(clip, weights):
    student = PromptKD(clip, NAMES, teacher=dict(name="test-tiny", pretrained=weights, quick_gelu=True))
    before = {k: v.clone() for k, v in student.teacher.state_dict().items()}
    optim = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=0.1)
    student.train()
    for _ in range(2):
        optim.zero_grad()
        student.loss(_images(clip), torch.zeros(4, dtype=torch.long))["loss_kd"].backward()
        optim.step()
    assert not student.teacher.training
    assert all(torch.equal(v, before[k]) for k, v in student.teacher.state_dict().items())
    state = student.learned_state_dict()
    assert {"projector.norm.running_mean", "projector.norm.running_var"} <= set(state)  # served at test time
    assert state["projector.norm.num_batches_tracked"].item() == 2


@pytest.mark.parametrize(("make", "message"), [
    (lambda w, p: str(_student_file(w, p)), "a PromptKD student cannot be a teacher"),
    (lambda w, p: CoCoOp(dict(name="test-tiny", pretrained=w, quick_gelu=True), NAMES), "depend on the image"),
    (lambda w, p: dict(name="toy", pretrained=None), "they must see the same batch"),
    (lambda w, p: None, "PromptKD needs a teacher"),
])
def test_a_teacher_it_cannot_learn_from_is_refused_before_training(clip, weights, tmp_path, make, message):
    with pytest.raises(ValueError, match=message):
        PromptKD(clip, NAMES, teacher=make(weights, tmp_path))


def _student_file(weights, tmp_path):
    student = PromptKD(build_clip("test-tiny"), NAMES, teacher=dict(name="test-tiny", pretrained=weights))
    meta = {"learner": {"type": "promptkd", **student.hparams()}, "backbone": {"name": "test-tiny"},
            "class_names": NAMES}
    path = tmp_path / "student.safetensors"
    save_safetensors(student.learned_state_dict(), path, {"vlprompt": json.dumps(meta)})
    return path


def test_a_run_distils_on_every_training_image_and_its_file_rebuilds_the_student(weights, tmp_path):
    from vlprompt import load_prompted_clip

    train_tool.main(["--method", "promptkd", "--dataset", "toy-shapes", "--work-dir", str(tmp_path),
                     "--cfg-options", "model.backbone.name=test-tiny", "model.backbone.pretrained=None",
                     "model.learner.teacher.name=test-tiny", f"model.learner.teacher.pretrained={weights}",
                     "train_cfg.max_epochs=1", "model.learner.depth=2",
                     f"experiment_name=pkd_{uuid.uuid4().hex[:8]}"])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["run"]["num_shots"] is None and results["metrics"]  # the whole training split, unlabelled
    clf = load_prompted_clip(tmp_path / "learned.safetensors")
    assert clf.learner.hparams()["teacher"]["pretrained"] == weights
    images = _images(clf.learner.backbone)
    with torch.no_grad():
        probs = clf.classify(images, ["red circle", "blue square"])
    assert probs.shape == (4, 2)
    assert F.cosine_similarity(clf.learner.encode_classes(), clf.learner.teacher.encode_classes()).min() > 0.999
