"""Gaussian prompt aggregation (PromptSRC): the evaluated prompts are a Gaussian-weighted average
of the prompts at the end of every epoch.

Khattak, Wasim et al., "Self-regulating Prompts", ICCV 2023. With ``E`` epochs, the weight of
epoch ``t = 1..E`` is ``w_t = N(t; mean, std) / sum_s N(s; mean, std)``; after epoch ``t`` the
learned parameters are scaled by ``w_t`` and added to a running sum, and after the last epoch the
sum replaces them.

Differences from the published code, on purpose: only the learner's learned parameters are
averaged (the published code averages the whole model state, frozen CLIP weights included, which
only adds fp16 rounding to them), and the running sum is kept in fp32 and saved in checkpoints,
so a resumed run aggregates exactly what an uninterrupted one does.
"""

from __future__ import annotations

import math

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ...engine.hooks import runner_model


def gpa_weights(epochs: int, mean: float, std: float) -> list[float]:
    """Normalised Gaussian weights of epochs ``1 .. epochs``."""
    if epochs < 1:
        raise ValueError(f"GPA needs at least one epoch, got {epochs}")
    if std <= 0:
        raise ValueError(f"GPA std must be > 0, got {std}")
    density = [math.exp(-0.5 * ((t - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi)) for t in range(1, epochs + 1)]
    total = sum(density)
    if total <= 0:
        raise ValueError(f"GPA mean {mean} with std {std} puts no weight on epochs 1..{epochs}")
    return [d / total for d in density]


def _learner(runner):
    model = runner_model(runner)
    return model.learner


@HOOKS.register_module(force=True)
class GaussianPromptAggregation(Hook):
    """Average the learner's learned parameters over epochs with Gaussian weights.

    Args:
        mean: centre of the Gaussian, in epochs counted from 1 (PromptSRC base-to-novel: 15 of 20).
        std: its standard deviation in epochs (1).

    The sum is updated at the end of every training epoch, before the epoch's checkpoint is
    written; at the end of the last epoch the aggregate is loaded into the learner, so the last
    checkpoint, ``learned.safetensors`` and the evaluation after training all hold the aggregated
    prompts (as the published code saves and tests them).
    """

    # Before CheckpointHook (VERY_LOW) saves the epoch, and before PromptCheckpointHook (VERY_LOW)
    # writes learned.safetensors at the end of training.
    priority = "NORMAL"
    CHECKPOINT_KEY = "gpa"

    def __init__(self, mean: float, std: float) -> None:
        self.mean, self.std = float(mean), float(std)
        self.weights: list[float] = []
        self.sum: dict[str, torch.Tensor] | None = None
        self.epochs: list[int] = []  # epochs already added (1-based), for the checks on resume

    def before_train(self, runner) -> None:  # noqa: D102
        self.weights = gpa_weights(runner.max_epochs, self.mean, self.std)
        if runner.epoch and self.epochs != list(range(1, runner.epoch + 1)):
            raise RuntimeError(
                f"resuming at epoch {runner.epoch + 1}, but the checkpoint holds the Gaussian prompt "
                f"aggregate of epochs {self.epochs or 'none'}: it was not written with GaussianPromptAggregation"
            )

    def after_train_epoch(self, runner) -> None:  # noqa: D102
        epoch = runner.epoch + 1  # runner.epoch counts the epochs finished before this one
        learner = _learner(runner)
        weight = self.weights[epoch - 1]
        state = learner.learned_state_dict()
        if self.sum is None:
            self.sum = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in state.items()}
        for k, v in state.items():
            self.sum[k].add_(v.float(), alpha=weight)
        self.epochs.append(epoch)
        if epoch == runner.max_epochs:
            self.load_aggregate(runner)

    def load_aggregate(self, runner) -> None:
        """Put the aggregated parameters into the learner (in the learner's dtypes)."""
        learner = _learner(runner)
        # load_state_dict copies into the parameters in their dtype and drops cached class features
        _, unexpected = learner.load_state_dict(self.sum or {}, strict=False)
        if unexpected:
            raise RuntimeError(f"GPA aggregate has parameters the learner does not: {unexpected}")
        runner.logger.info(
            f"GaussianPromptAggregation: loaded the aggregate of epochs 1..{runner.max_epochs} "
            f"(mean {self.mean}, std {self.std}; largest weight {max(self.weights):.3f} "
            f"at epoch {1 + self.weights.index(max(self.weights))})"
        )

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:  # noqa: D102
        checkpoint[self.CHECKPOINT_KEY] = {
            "mean": self.mean, "std": self.std, "epochs": list(self.epochs),
            "sum": {k: v.detach().cpu().clone() for k, v in (self.sum or {}).items()},
        }

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:  # noqa: D102
        if not runner._resume:
            return
        state = checkpoint.get(self.CHECKPOINT_KEY)
        if state is None:
            self.sum, self.epochs = None, []
            return
        if (state["mean"], state["std"]) != (self.mean, self.std):
            raise RuntimeError(f"the checkpoint's GPA used mean {state['mean']}, std {state['std']}; "
                               f"this run is configured with mean {self.mean}, std {self.std}")
        device = _learner(runner).device
        self.sum = {k: v.to(device) for k, v in state["sum"].items()} or None
        self.epochs = list(state["epochs"])
