"""Seeded inputs of the online adapters' fidelity tests: the golden files (tests/golden/official_tda_boost.json,
official_dmn.json) were made by the official code from exactly these numbers (see their NOTE)."""

from __future__ import annotations

import torch


def stream_inputs(signal: float = 2.0) -> dict:
    """20 test samples of 64 views (raw features, dim 512, view 0 the original) of 7 classes, labels and CLIP's
    logit scale: each sample's views scatter around ``signal`` x its class's text feature, some mixed with another
    class. At scale 100 the default views' predictions are one-hot in fp32; ``signal=0.1`` gives moderate
    entropies (the official generators: /work/notes/tta28/common/inputs.py and online/diag/inputs_soft.py)."""
    g = torch.Generator().manual_seed(2025)
    classes = torch.randn(7, 512, generator=g) * 0.4
    labels = torch.randint(0, 7, (20,), generator=g)
    samples = []
    for i in range(20):
        true = int(labels[i])
        other = int(torch.randint(0, 7, (1,), generator=g))
        spread = 0.8 + 1.0 * float(torch.rand(1, generator=g))
        mix = 0.5 * float(torch.rand(1, generator=g))
        pick = torch.rand(64, 1, generator=g) < mix
        centre = torch.where(pick, classes[other], classes[true])
        samples.append(centre * signal + spread * torch.randn(64, 512, generator=g) * 0.4 + 0.05)
    return {"raw_views": torch.stack(samples), "raw_classes": classes, "labels": labels, "scale": 100.0}
