"""Evaluation helpers shared by the tools: feature extraction, zero-shot and linear-probe accuracy."""

from .features import extract_features
from .linear_probe import fit_linear_probe, linear_probe_accuracy, probe_accuracy, train_linear_probe

__all__ = ["extract_features", "fit_linear_probe", "linear_probe_accuracy", "probe_accuracy", "train_linear_probe"]
