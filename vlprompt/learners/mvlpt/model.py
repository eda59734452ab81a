"""The mmengine side of multitask prompt training (MVLPT): task ids through the model, per-task
logit masks in training, per-task restricted accuracy.

* :class:`MultitaskDataPreprocessor` passes ``data_samples = {'label', 'task'}`` (``task`` is
  ``None`` for a dataset without task ids, which then trains and scores as a single task).
* :class:`MultitaskModel` is :class:`~vlprompt.engine.model.PromptModel` with ``task_mask``:

  - ``'none'`` (official default): cross-entropy over the union of all tasks' classes;
  - ``'zero'``: the official ``--multi-task-label_pertask``: the logits are multiplied by a 0/1
    mask of the sample's task classes, so out-of-task logits become exactly 0 (not -inf: they stay
    in the softmax denominator with ``exp(0) = 1`` each, and get no gradient);
  - ``'-inf'`` (an alternative, not in the official code): out-of-task logits set to -inf, i.e. a
    cross-entropy over the sample's own task only.

  The mask is applied to the cross-entropy of training steps only; the learner's extra loss terms
  see the unmasked logits. Evaluation needs no mask: :class:`MultitaskAccuracyMetric` takes the
  argmax inside the task's slice, where either mask changes nothing. ``task_ranges`` (the
  ``[start, end)`` labels of each task) come from the training dataset: ``build_runner`` fills
  ``model.task_ranges`` and ``model.task_names`` from a dataset that has them.
* :class:`MultitaskAccuracyMetric`: ``top1/<task>`` = top-1 (%) with each sample's logits restricted
  to its task's classes (as the official ``test()`` does for Dassl data), and ``top1`` = their mean
  (the official ``MULTITASK_EVALKEY='average'``). Task names and ranges come from the evaluated
  dataset's ``metainfo`` (:class:`~vlprompt.datasets.MultitaskDataset`), or the constructor.

Official quirk worth knowing: in ``trainers/mvlpt.py`` the ``pertask`` mask reads
``dm._labelmap``, which only the ELEVATER data manager has, so on the CoOp datasets the official
flag stops with an AttributeError; the mask itself is reproduced here for any data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseDataPreprocessor
from mmengine.registry import METRICS, MODELS

from ...engine.model import PromptModel
from ...errors import ConfigError
from ..base import PromptLearner

__all__ = ["TASK_MASKS", "MultitaskAccuracyMetric", "MultitaskDataPreprocessor", "MultitaskModel", "apply_task_mask",
           "check_task_ranges"]

TASK_MASKS = ("none", "zero", "-inf")


def check_task_ranges(ranges: Sequence[Sequence[int]], num_classes: int | None = None,
                      where: str = "task_ranges") -> list[tuple[int, int]]:
    """``ranges`` as ``[(start, end), ...]``: contiguous, in order, from 0 (to ``num_classes``)."""
    out: list[tuple[int, int]] = []
    expected = 0
    for i, r in enumerate(ranges):
        try:
            start, end = (int(v) for v in r)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}[{i}] must be (start, end), got {r!r}") from None
        if start != expected or end <= start:
            raise ConfigError(f"{where}[{i}] = ({start}, {end}): ranges must be non-empty and contiguous from 0 "
                              f"(expected a start of {expected})")
        out.append((start, end))
        expected = end
    if not out:
        raise ConfigError(f"{where} is empty")
    if num_classes is not None and expected != num_classes:
        raise ConfigError(f"{where} covers {expected} classes, but there are {num_classes}")
    return out


def apply_task_mask(logits: torch.Tensor, task: torch.Tensor, ranges: torch.Tensor, mode: str) -> torch.Tensor:
    """Mask ``logits (B, C)`` to each sample's task classes; ``ranges (T, 2)`` holds ``[start, end)``.

    ``mode='zero'`` multiplies by the 0/1 mask (MVLPT's ``logits * select_index``), ``'-inf'`` fills
    out-of-task entries with -inf, ``'none'`` returns ``logits``.
    """
    if mode == "none":
        return logits
    if mode not in TASK_MASKS:
        raise ValueError(f"task_mask must be one of {TASK_MASKS}, got {mode!r}")
    ranges = ranges.to(logits.device)
    task = task.to(logits.device).long()
    index = torch.arange(logits.shape[-1], device=logits.device).unsqueeze(0)
    inside = (index >= ranges[task, 0].unsqueeze(-1)) & (index < ranges[task, 1].unsqueeze(-1))
    if mode == "zero":
        return logits * inside.to(logits.dtype)
    return logits.masked_fill(~inside, float("-inf"))


@MODELS.register_module(force=True)
class MultitaskDataPreprocessor(BaseDataPreprocessor):
    """Moves a collated batch to the model's device; ``data_samples = {'label', 'task'}``."""

    def forward(self, data: dict, training: bool = False) -> dict[str, Any]:  # noqa: D102
        data = self.cast_data(data)
        return {"inputs": data["img"], "data_samples": {"label": data["label"], "task": data.get("task")}}


@MODELS.register_module(force=True)
class MultitaskModel(PromptModel):
    """:class:`PromptModel` over a union of tasks, with an optional per-task logit mask in training.

    Args:
        backbone, learner, class_names: as :class:`PromptModel` (``class_names``: the union).
        task_mask: ``'none'`` (official default), ``'zero'`` (official ``--multi-task-label_pertask``:
            out-of-task logits multiplied by 0) or ``'-inf'`` (labelled alternative).
        task_ranges: ``[start, end)`` labels of each task (``build_runner`` fills them from the
            training dataset); needed by a mask, checked against ``class_names``.
        task_names: Names of the tasks (for the metadata; filled in with the ranges).
    """

    def __init__(self, backbone: dict, learner: dict, class_names: Sequence[str] | None = None,
                 task_mask: str = "none", task_ranges: Sequence[Sequence[int]] | None = None,
                 task_names: Sequence[str] | None = None, data_preprocessor: dict | None = None) -> None:
        if task_mask not in TASK_MASKS:
            raise ConfigError(f"MultitaskModel: task_mask must be one of {', '.join(TASK_MASKS)}, got {task_mask!r}")
        if task_mask != "none" and task_ranges is None:
            raise ConfigError(f"MultitaskModel: task_mask={task_mask!r} needs task_ranges (build_runner fills them "
                              "from a MultitaskDataset training set)")
        ranges = None if task_ranges is None else check_task_ranges(
            task_ranges, len(class_names) if class_names else None, "MultitaskModel: task_ranges")
        names = None if task_names is None else [str(n) for n in task_names]
        if names is not None and ranges is not None and len(names) != len(ranges):
            raise ConfigError(f"MultitaskModel: {len(names)} task_names for {len(ranges)} task_ranges")
        super().__init__(backbone, learner, class_names,
                         data_preprocessor=data_preprocessor or dict(type=MultitaskDataPreprocessor))
        if task_mask != "none" and type(self.learner).loss is not PromptLearner.loss:
            raise ConfigError(f"MultitaskModel: task_mask={task_mask!r} masks the cross-entropy of the base loss, but "
                              f"learner {self.learner.learner_name!r} computes its own loss")
        self.task_mask = task_mask
        self.task_names = names
        self.task_ranges = ranges
        self._train_classes = list(self.class_names)

    @staticmethod
    def _split(data_samples: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if isinstance(data_samples, dict):
            return data_samples.get("label"), data_samples.get("task")
        return data_samples, None

    def _ranges_tensor(self) -> torch.Tensor:
        if self.task_ranges is None:
            raise ConfigError(f"MultitaskModel: task_mask={self.task_mask!r} needs task_ranges")
        if list(self.class_names) != self._train_classes:
            raise ConfigError("MultitaskModel: the task mask applies to the training classes, but the learner is set "
                              f"to another class set ({len(self.class_names)} classes)")
        return torch.tensor(self.task_ranges, dtype=torch.long)

    def masked_loss(self, inputs: torch.Tensor, labels: torch.Tensor, task: torch.Tensor) -> dict[str, torch.Tensor]:
        """The learner's loss with the cross-entropy on task-masked logits."""
        ranges = self._ranges_tensor()
        return self.learner.loss(inputs, labels, ce_logits=lambda logits: apply_task_mask(logits, task, ranges,
                                                                                          self.task_mask))

    def forward(self, inputs: torch.Tensor, data_samples: Any = None, mode: str = "tensor"):
        labels, task = self._split(data_samples)
        if mode == "loss":
            if self.task_mask == "none" or task is None:
                return self.learner.loss(inputs, labels)
            return self.masked_loss(inputs, labels, task)
        logits = self.learner(inputs)
        if mode == "predict":
            logits, labels = logits.float().cpu(), labels.cpu()  # one device sync per batch
            if task is None:
                return [{"logits": lg, "label": lb} for lg, lb in zip(logits, labels, strict=True)]
            task = task.cpu()
            return [{"logits": lg, "label": lb, "task": int(t)} for lg, lb, t in zip(logits, labels, task, strict=True)]
        if mode == "tensor":
            return logits
        raise ValueError(f"unknown mode {mode!r}: expected loss, predict or tensor")

    def metadata(self) -> dict[str, Any]:
        """:meth:`PromptModel.metadata` (what rebuilds the learner) plus the tasks and the mask."""
        meta = super().metadata()
        meta["multitask"] = {"task_mask": self.task_mask, "task_names": self.task_names,
                             "task_ranges": None if self.task_ranges is None else [list(r) for r in self.task_ranges]}
        return meta


@METRICS.register_module(force=True)
class MultitaskAccuracyMetric(BaseMetric):
    """Top-1 (%) of each task with the logits restricted to the task's classes, and their mean.

    Keys (with mmengine's prefix, ``accuracy`` by default): ``top1`` (mean over the tasks present),
    then ``top1/<task name>``. A sample's prediction is ``argmax(logits[start:end])`` of its task's
    ``[start, end)`` range. Names and ranges come from ``dataset_meta`` (``task_names``,
    ``task_ranges``: a :class:`~vlprompt.datasets.MultitaskDataset`'s ``metainfo``), else from the
    arguments; samples without a task id count as task 0 when there is one task.
    """

    default_prefix = "accuracy"

    def __init__(self, task_names: Sequence[str] | None = None, task_ranges: Sequence[Sequence[int]] | None = None,
                 prefix: str | None = None, collect_device: str = "cpu") -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self._names = None if task_names is None else [str(n) for n in task_names]
        self._ranges = None if task_ranges is None else check_task_ranges(task_ranges, where="task_ranges")

    def tasks(self, num_classes: int | None = None) -> tuple[list[str], list[tuple[int, int]]]:
        """Task names and class ranges in use (``dataset_meta`` first, then the arguments)."""
        meta = self.dataset_meta or {}
        ranges = meta.get("task_ranges") or self._ranges
        names = meta.get("task_names") or self._names
        if ranges is None:
            if num_classes is None:
                raise ConfigError("MultitaskAccuracyMetric: no task_ranges (neither in the dataset's metainfo nor "
                                  "given)")
            ranges = [(0, num_classes)]
        ranges = check_task_ranges(ranges, where="MultitaskAccuracyMetric: task_ranges")
        names = list(names) if names is not None else [f"task{i}" for i in range(len(ranges))]
        if len(names) != len(ranges):
            raise ConfigError(f"MultitaskAccuracyMetric: {len(names)} task names for {len(ranges)} task ranges")
        return names, ranges

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:  # noqa: D102
        _, ranges = self.tasks(data_samples[0]["logits"].shape[-1] if data_samples else None)
        for sample in data_samples:
            logits = sample["logits"]
            task = sample.get("task")
            if task is None:
                if len(ranges) != 1:
                    raise ValueError("MultitaskAccuracyMetric: a sample has no task id, but there are "
                                     f"{len(ranges)} tasks (use a MultitaskDataset and MultitaskModel)")
                task = 0
            task = int(task)
            start, end = ranges[task]
            if logits.shape[-1] < end:
                raise ValueError(f"MultitaskAccuracyMetric: {logits.shape[-1]} logits, but task {task} spans classes "
                                 f"[{start}, {end})")
            label = int(sample["label"])
            if not start <= label < end:
                raise ValueError(f"MultitaskAccuracyMetric: label {label} is outside task {task}'s classes "
                                 f"[{start}, {end})")
            pred = int(logits[start:end].argmax()) + start
            self.results.append((task, pred == label))

    def compute_metrics(self, results: list) -> dict[str, float]:  # noqa: D102
        names = (self.dataset_meta or {}).get("task_names") or self._names or []
        per: dict[int, list[bool]] = {}
        for task, correct in results:
            per.setdefault(task, []).append(correct)
        accs = {(names[t] if t < len(names) else f"task{t}"): 100.0 * sum(v) / len(v) for t, v in sorted(per.items())}
        out = {"top1": sum(accs.values()) / len(accs) if accs else float("nan")}
        out.update({f"top1/{name}": acc for name, acc in accs.items()})
        return out
