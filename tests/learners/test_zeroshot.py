"""Zero-shot classification API: template ensembles, cached class embeddings, PIL input."""

import numpy as np
import pytest
import torch
from PIL import Image

import vlprompt
from vlprompt.backbones import ContextOverflowError
from vlprompt.zeroshot import PromptedClassifier, ZeroShotClassifier, class_text_features


def test_template_ensemble_is_the_normalised_mean_of_normalised_features(clip):
    names = ["dog", "cat", "annual crop land"]
    templates = ["a photo of a {}.", "a sketch of a {}.", "itap of a {}."]
    got = class_text_features(clip, names, templates, chunk_size=4)  # chunks cut across classes
    with torch.no_grad():
        per_template = torch.stack(
            [clip.encode_text(clip.tokenize([t.format(n) for n in names]), normalize=True)
             for t in templates]
        )
    ref = torch.nn.functional.normalize(per_template.mean(0), dim=-1)
    assert torch.allclose(got, ref, atol=1e-6)


def test_classifier_encodes_text_once_and_accepts_pil_images(clip, monkeypatch):
    clf = ZeroShotClassifier(clip, ["dog", "cat"], templates=["a photo of a {}.", "a {}."])
    calls = []
    original = clip.encode_text
    monkeypatch.setattr(clip, "encode_text", lambda *a, **k: calls.append(1) or original(*a, **k))
    images = torch.randn(3, 3, 32, 32)
    logits = clf(images)
    assert logits.shape == (3, 2) and not calls  # class embeddings were cached at construction
    feats = clip.encode_image(images, normalize=True)
    assert torch.allclose(logits, clip.logit_scale * feats @ clf.text_features.t(), atol=1e-5)
    pil = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    probs = clf.predict_proba([pil, pil])
    assert probs.shape == (2, 2) and torch.allclose(probs.sum(-1), torch.ones(2))
    clf.set_classes(["a", "b", "c"])
    assert clf(images).shape == (3, 3)


def test_load_prompted_clip_classifies_with_any_class_names(clip):
    clf = vlprompt.load_prompted_clip("test-tiny", pretrained=None)  # random weights, asked for
    assert isinstance(clf, PromptedClassifier)
    images = torch.randn(2, 3, 32, 32)
    p1 = clf.classify(images, ["dog", "cat", "bird"])
    p2 = clf.classify(images, ["red circle", "blue square"])
    assert p1.shape == (2, 3) and p2.shape == (2, 2)
    assert torch.allclose(p2.sum(-1), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match="unknown CLIP architecture"):
        vlprompt.load_prompted_clip("no-such-model")


def test_too_long_class_name_is_named(clip):
    name = "very " * 80 + "long name"
    with pytest.raises(ContextOverflowError, match="very very"):
        class_text_features(clip, ["dog", name])
