"""Test-wide settings: no network, deterministic torch, small shared models, and no file written into the
checkout (checkout_guard: tests write only into temporary folders)."""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):  # one of `pytest -n 2`'s workers: one thread each, no oversubscription
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a pretrained tag must fail fast, never retry a download
os.environ.setdefault("VLPROMPT_CACHE", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "vlprompt"))

import pytest  # noqa: E402
import torch  # noqa: E402
from checkout_guard import pytest_sessionfinish, pytest_sessionstart  # noqa: E402, F401

torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def clip():
    """The random-init 2-layer CLIP (``test-tiny``, 32 px, seed 0) that every test not modifying it shares;
    tests that change a backbone build their own (learners/test_learners.py: a fresh one per test)."""
    from vlprompt.backbones import build_clip

    torch.manual_seed(0)
    return build_clip("test-tiny")
