"""Tip-Adapter's cache, its classes, and the runs that fill and tune it (the engine's LearnerDataHook)."""

import json
import re
import uuid

import pytest
import torch
from tool_loader import load_tool

from vlprompt.learners import TipAdapter

NAMES = ["red circle", "blue star", "green square"]
train_tool = load_tool("train")


@pytest.fixture(scope="module")
def clip():
    from vlprompt.backbones import build_clip

    return build_clip("test-tiny", pretrained=None)


def test_cache_keys_are_the_normalised_mean_of_raw_features_over_the_passes(clip):
    torch.manual_seed(0)
    learner = TipAdapter(clip, NAMES, augment_epochs=2)
    passes = [torch.randn(4, 3, clip.image_size, clip.image_size) for _ in range(2)]
    labels = torch.tensor([2, 0, 1, 2])
    calls = iter(passes)
    with torch.no_grad():
        learner.build_cache(lambda: iter([(next(calls), labels)]))
        raw = torch.stack([clip.encode_image(p) for p in passes]).mean(0)
    # averaged before normalising (the official order): not the mean of normalised features
    torch.testing.assert_close(learner.cache_keys.detach(), raw / raw.norm(dim=-1, keepdim=True))
    assert torch.equal(learner.cache_values, torch.eye(3)[labels])
    assert learner.cache_classes == NAMES and learner.hparams()["cache_size"] == 4


def test_classes_outside_the_cache_get_the_zero_shot_logits_alone(clip):
    torch.manual_seed(1)
    learner = TipAdapter(clip, NAMES, alpha=5.0, augment_epochs=1).eval()
    shots = torch.randn(3, 3, clip.image_size, clip.image_size)
    with torch.no_grad():
        learner.build_cache(lambda: iter([(shots, torch.tensor([0, 1, 2]))]))
        full = learner(shots)
        learner.set_classes(["blue star", "yellow moon"])
        mixed = learner(shots)
        zero_shot = learner.tip_logits(learner.encode_images(shots), alpha=0.0)
    # the text tower is cut at the class set's longest prompt: one class's features differ by rounding between sets
    torch.testing.assert_close(mixed[:, 0], full[:, 1], rtol=1e-5, atol=1e-4)  # "blue star" keeps its cache column
    torch.testing.assert_close(mixed[:, 1], zero_shot[:, 1])  # "yellow moon" is not in the cache
    assert (full - learner.tip_logits(learner.encode_images(shots), alpha=0.0)[:, :1]).abs().max() > 0


def _run(tmp_path, method: str, *options: str) -> dict:
    argv = ["--method", method, "--dataset", "toy-shapes", "--overlay", "few_shot", "--work-dir", str(tmp_path),
            "--cfg-options", "model.backbone.name=test-tiny", "model.backbone.pretrained=None",
            "train_dataloader.dataset.num_shots=2", "model.learner.augment_epochs=2",
            "model.learner.search_step=[10,5]",
            f"experiment_name=tip_{uuid.uuid4().hex[:8]}", *options]  # mmengine reuses a logger by name
    return train_tool.main(argv)


@pytest.mark.parametrize("method", ["tip_adapter", "tip_adapter_f"])
def test_a_run_fills_the_cache_searches_on_val_and_saves_it_all(tmp_path, method):
    from vlprompt import load_prompted_clip
    from vlprompt.datasets import build_dataset

    _run(tmp_path, method, *(["train_cfg.max_epochs=2", "param_scheduler.end=2"] if method == "tip_adapter_f" else []))
    from safetensors import safe_open

    assert json.loads((tmp_path / "results.json").read_text())["metrics"]

    with safe_open(str(tmp_path / "learned.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["vlprompt"])
        keys = f.get_tensor("cache_keys")
    learner = meta["learner"]
    classes = len(meta["class_names"])
    assert learner["cache_size"] == 2 * classes == len(keys)  # 2 shots of every class
    assert learner["cache_classes"] == meta["class_names"]
    assert (learner["alpha"], learner["beta"]) != (1.17, 1.0)  # replaced by the search on the val split
    log = "".join(p.read_text() for p in tmp_path.rglob("*.log"))
    assert re.search(r"tip_adapter after training: .*beta [\d.]+, alpha [\d.]+, tuning top-1", log)
    if method == "tip_adapter_f":
        assert log.count("tip_adapter after training epoch: tuning top-1") == 2
    # the saved file rebuilds the same classifier: its cache and the searched alpha and beta
    clf = load_prompted_clip(tmp_path / "learned.safetensors")
    assert torch.equal(clf.learner.cache_keys.detach(), keys)
    assert (clf.learner.alpha, clf.learner.beta) == (learner["alpha"], learner["beta"])
    data = build_dataset("toy-shapes", split="test", image_size=clf.learner.backbone.image_size)
    images = torch.stack([data[i]["img"] for i in range(4)])
    with torch.no_grad():
        probs = clf.classify(images, meta["class_names"])
        zero_shot = clf.learner.tip_logits(clf.learner.encode_images(images), alpha=0.0).softmax(-1)
    assert probs.shape == (4, classes) and (probs - zero_shot).abs().max() > 1e-4  # the cache term is applied


def test_a_tuning_split_with_other_classes_is_refused_before_anything_runs(tmp_path):
    from vlprompt.errors import ConfigError

    with pytest.raises(ConfigError, match="tune_dataloader: its classes are not the training classes"):
        _run(tmp_path, "tip_adapter", "tune_dataloader.dataset.subsample=base")


def test_the_training_crop_scale_is_a_dataset_setting_checked_by_value():
    from torchvision import transforms as T

    from vlprompt.datasets import build_dataset
    from vlprompt.errors import ConfigError

    data = build_dataset("toy-shapes", split="train", num_shots=1, crop_scale=(0.5, 1.0))
    crop = next(t for t in data.transform.transforms if isinstance(t, T.RandomResizedCrop))
    assert crop.scale == (0.5, 1.0)  # Tip-Adapter's cache crops, not Dassl's (0.08, 1)
    with pytest.raises(ConfigError, match=r"0 < low <= high <= 1, got \(0, 1\)"):
        build_dataset("toy-shapes", split="train", num_shots=1, crop_scale=(0, 1))


def test_a_file_whose_cache_classes_do_not_fit_its_values_is_refused_naming_it(clip, tmp_path):
    from vlprompt.backbones import save_safetensors
    from vlprompt.learned import load_learned_into

    learner = TipAdapter(clip, NAMES, augment_epochs=1)
    shots = torch.randn(3, 3, clip.image_size, clip.image_size)
    with torch.no_grad():
        learner.build_cache(lambda: iter([(shots, torch.tensor([0, 1, 2]))]))
    meta = {"learner": {"type": "tip_adapter", **learner.hparams(), "cache_classes": NAMES[:2]}}
    path = tmp_path / "learned.safetensors"
    save_safetensors(learner.learned_state_dict(), path, {"vlprompt": json.dumps(meta)})
    with pytest.raises(ValueError, match=f"{path}: learner.cache_classes must name"):
        load_learned_into(TipAdapter(clip, NAMES), path)
