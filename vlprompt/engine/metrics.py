"""Top-1 accuracy and expected calibration error over a test set."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, bins: int = 15) -> float:
    """ECE (%): the bin-weighted gap between confidence and accuracy, ``bins`` equal-width bins."""
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            gap = (confidence[in_bin].mean() - correct[in_bin].float().mean()).abs()
            ece += in_bin.float().mean() * gap
    return ece.item() * 100


@METRICS.register_module(force=True)
class AccuracyMetric(BaseMetric):
    """``top1`` accuracy (%) and ``ece`` (%) of the predicted class probabilities.

    Use ``prefix`` to name the task (``base``, ``novel``, a dataset name): keys become
    ``base/top1``, ``base/ece``.
    """

    default_prefix = "accuracy"

    def __init__(self, bins: int = 15, prefix: str | None = None, collect_device: str = "cpu") -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.bins = bins

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:  # noqa: D102
        for sample in data_samples:
            probs = sample["logits"].float().softmax(-1)
            conf, pred = probs.max(-1)
            self.results.append((pred.item(), int(sample["label"]), conf.item()))

    def compute_metrics(self, results: list) -> dict[str, float]:  # noqa: D102
        pred, label, conf = (torch.tensor(col) for col in zip(*results, strict=True))
        correct = pred == label
        return {"top1": correct.float().mean().item() * 100,
                "ece": expected_calibration_error(conf, correct, self.bins)}
