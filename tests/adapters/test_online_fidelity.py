"""The online adapters against their official code on the same stream of 20 samples (tests/golden_inputs.py):
each sample's prediction and, after 10 and 20 samples, the memory's contents, within 1e-4 in fp32. The golden
files say how they were produced (their NOTE)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from golden_inputs import stream_inputs
from helpers import ROOT

from vlprompt.adapters import DMN

GOLDEN = ROOT / "tests" / "golden"


@pytest.fixture(scope="module")
def stream():
    data = stream_inputs()
    return F.normalize(data["raw_views"], dim=-1), F.normalize(data["raw_classes"], dim=-1), data["labels"]


def _close(a, b, tol: float = 1e-4) -> bool:
    return (torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64)).abs().max() < tol


def _entries(features: torch.Tensor, entropy: torch.Tensor) -> list[dict]:
    """A class's entries as the golden file summarises them, ordered by entropy."""
    out = [{"sum": float(f.double().sum()), "abs_sum": float(f.double().abs().sum()), "first8": f[:8].tolist(),
            "entropy": float(e)} for f, e in zip(features, entropy, strict=True) if torch.isfinite(e)]
    return sorted(out, key=lambda e: e["entropy"])


def _same_memory(cache, golden: list[dict]) -> None:
    for want in golden:
        mine = _entries(cache.features[want["class"]], cache.entropy[want["class"]])
        theirs = sorted(want["entries"], key=lambda e: e["entropy"])
        assert len(mine) == want["count"] == len(theirs)
        for a, b in zip(mine, theirs, strict=True):
            assert all(_close(a[key], b[key]) for key in ("entropy", "sum", "abs_sum", "first8"))


@pytest.mark.parametrize("run", ["memory_50", "memory_3"])
def test_dmn_matches_the_official_memory_and_predictions(stream, run):
    golden = json.loads((GOLDEN / "official_dmn.json").read_text())[run]
    views, classes, _ = stream
    adapter = DMN(None, shape=tuple(classes.shape), memory_size=golden["memory_size"], fusion=1.0)
    replaced = 0
    for i, want in enumerate(golden["samples"]):
        logits = adapter.infer(views[i, :32], classes, golden["scale"], i)
        assert adapter.last_pseudo_label == want["pseudo_label"]
        assert _close(adapter.last_memory_probs, want["memory_probs"])
        fused = torch.tensor(want["fused_1"])
        assert _close(logits.softmax(dim=-1)[0], fused / fused.sum())
        assert int(logits.argmax()) == int(fused.argmax())
        replaced += len(adapter.memory) < i + 1
        if i + 1 in (10, 20):
            _same_memory(adapter.memory, golden[f"memory_after_{i + 1}"])
    assert (replaced > 0) == (golden["memory_size"] == 3)  # the small memory exercises the replacement
