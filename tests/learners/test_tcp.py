"""TCP's settings on the tiny CLIP (its numbers are checked against the official code in test_fidelity_tcp.py)."""

import pytest
import torch

from vlprompt.backbones import build_clip
from vlprompt.learners import TCP


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return build_clip("test-tiny")


def test_the_prompt_template_follows_the_context_and_the_tokens_enter_at_their_layer(clip):
    learner = TCP(clip, ["sea_lion"], prompt_template="{}, a type of pet.", layer=1)
    text = clip.tokenize(["sea lion, a type of pet."], reserve=4)
    assert torch.equal(learner.class_token_ids, text)
    base = learner.encode_classes()
    with torch.no_grad():
        learner.meta_net.linear2.bias.add_(torch.randn(learner.meta_net.linear2.bias.shape))  # other class tokens
    assert (learner.encode_classes() - base).abs().max() > 1e-3
    assert learner.class_tokens().shape == (1, 4, clip.text_width)
    assert TCP(clip, ["dog"]).layer == 1 and TCP(build_clip("toy"), ["dog"]).layer == 3  # 2/3 up: 8 of 12


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(prompt_template="a photo"), "prompt_template needs a '{}'"),
    (dict(layer=0), "layer must be between 1 and"),
    (dict(layer=99), "layer must be between 1 and"),
])
def test_bad_settings_are_refused_naming_them(clip, kwargs, message):
    with pytest.raises(ValueError, match=message):
        TCP(clip, ["dog"], **kwargs)
