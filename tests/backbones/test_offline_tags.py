"""An open_clip tag on an offline machine fails at once (issue 31, item 7): with ``HF_HUB_OFFLINE`` set, or
on the first connection error, without huggingface_hub's five retries (about 50 s), and the error says
where to put the file or how to pass it instead.

The network is replaced by a socket layer that refuses every connection and counts the attempts;
``time.sleep`` is counted too, so a retrying implementation fails the test quickly instead of waiting."""

from __future__ import annotations

import socket
import time

import huggingface_hub.constants
import pytest

from vlprompt import load_prompted_clip
from vlprompt.backbones import PretrainedUnavailable
from vlprompt.backbones.checkpoint import CheckpointError


@pytest.fixture
def no_network(tmp_path, monkeypatch):
    """Every connection attempt fails (and is counted), as on a machine without network; empty caches."""
    calls = {"connect": 0, "sleep": 0}

    def refuse(*args, **kwargs):
        calls["connect"] += 1
        raise OSError(101, "Network is unreachable (test)")

    def no_sleep(seconds):
        calls["sleep"] += 1

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(time, "sleep", no_sleep)
    monkeypatch.setenv("VLPROMPT_CLIP_CACHE", str(tmp_path / "clip"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return calls


def _assert_helpful(message: str, tmp_path) -> None:
    assert "'openai'" in message and "ViT-B-16" in message, message  # the tag and the architecture
    assert "ViT-B-16.pt (https://" in message and str(tmp_path / "clip") in message, message  # where the file goes
    assert "pretrained='/path/to/file.pt'" in message, message  # or pass a local file


def test_offline_variable_fails_without_a_connection(no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedUnavailable) as err:
        load_prompted_clip({"backbone": "ViT-B-16", "pretrained": "openai"})
    assert no_network == {"connect": 0, "sleep": 0}
    assert "HF_HUB_OFFLINE is set" in str(err.value)
    _assert_helpful(str(err.value), tmp_path)


def test_first_connection_error_fails_at_once(no_network, tmp_path, monkeypatch):
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read when the hub was imported
    with pytest.raises(PretrainedUnavailable) as err:
        load_prompted_clip({"backbone": "ViT-B-16", "pretrained": "openai"})
    assert no_network["connect"] <= 1 and no_network["sleep"] == 0, no_network  # no retries, no waiting
    assert "Network is unreachable (test)" in str(err.value)
    _assert_helpful(str(err.value), tmp_path)


def test_a_copy_in_the_clip_cache_is_used_offline(no_network, tmp_path, monkeypatch):
    """The error's first advice works: the URL's file in the cache is found without the network (open_clip
    itself looks only in the Hugging Face cache when huggingface_hub is installed)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "ViT-B-16.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as err:  # found, then read: it is no checkpoint
        load_prompted_clip({"backbone": "ViT-B-16", "pretrained": "openai"})
    assert str(tmp_path / "clip" / "ViT-B-16.pt") in str(err.value) and no_network["connect"] == 0
