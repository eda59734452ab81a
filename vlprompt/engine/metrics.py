"""Top-1 accuracy and expected calibration error over a test set, the reliability diagram, peak memory."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

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


def reliability_bins(confidence: torch.Tensor, correct: torch.Tensor, bins: int = 15
                     ) -> list[tuple[float, float, float, float, int]]:
    """Per bin of :func:`expected_calibration_error`: ``(low, high, mean confidence, accuracy, count)``."""
    edges = torch.linspace(0, 1, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        count = int(in_bin.sum())
        rows.append((float(lo), float(hi), float(confidence[in_bin].mean()) if count else float("nan"),
                     float(correct[in_bin].float().mean()) if count else float("nan"), count))
    return rows


def reliability_diagram(confidence: torch.Tensor, correct: torch.Tensor, path: str | os.PathLike, title: str,
                        bins: int = 15) -> Path:
    """A reliability diagram PNG at ``path``: accuracy per confidence bin against the diagonal of perfect
    calibration (the gap is what ECE sums), with the share of samples per bin below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..tables import save_plot

    rows = reliability_bins(confidence, correct, bins)
    n = max(1, len(confidence))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.5, 5.2), height_ratios=(3, 1), sharex=True)
    width = 1 / bins
    for lo, _, conf, acc, count in rows:
        if count:
            top.bar(lo, acc, width=width, align="edge", color="tab:blue", edgecolor="white")
            top.bar(lo, conf - acc, bottom=acc, width=width, align="edge", color="tab:red", alpha=0.35,
                    edgecolor="none")
            bottom.bar(lo, count / n, width=width, align="edge", color="0.5", edgecolor="white")
    top.plot([0, 1], [0, 1], "--", color="0.3", linewidth=1)
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.set_title(title, fontsize=9)
    bottom.set_xlabel("confidence (top class probability)")
    bottom.set_ylabel("share")
    bottom.set_xlim(0, 1)
    return save_plot(fig, path)


def peak_memory_mb(device: torch.device | str) -> float:
    """Peak memory of this process so far, in MB: the allocator's peak on a CUDA device, else the process's
    peak resident size (which includes the Python interpreter and the libraries)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


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
