"""GRAM downstream: any learner, started from a meta-learned initialisation, trained with regulated gradients.

``GRAMModel`` is ``PromptModel`` plus ``gram=dict(file=..., init=True, regulate=True)``: the learner is
built as usual (unedited), its prompt parameters are overwritten by the file's initialisation, and a
gradient hook on each of them applies the file's regulator to its gradient at every backward pass, so
any optimizer, schedule, AMP wrapper or ``tools/train.py`` feature works unchanged. (Under DDP each
process regulates its own gradient before the all-reduce; the default gate is invariant to the loss
scale, so AMP's scaling does not change it.) Checkpoints are the learner's own: a GRAM-trained CoOp
loads wherever a CoOp does. Reimplemented from the paper (no official code): see :mod:`vlprompt.meta.gram`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from mmengine.registry import MODELS

from ..backbones import CheckpointError, check_same_weights
from ..engine.model import PromptModel
from .gram import apply_init, check_gram_fits, prompt_parameters, read_gram_file
from .regulator import GradientRegulator, build_regulator

GRAM_KEYS = ("file", "init", "regulate", "regulator")


def gram_settings(gram: Mapping[str, Any] | None) -> dict[str, Any]:
    """``gram=`` with its defaults, unknown keys refused."""
    gram = dict(gram or {})
    unknown = sorted(set(gram) - set(GRAM_KEYS))
    if unknown:
        raise KeyError(f"model.gram: unknown keys {unknown}; accepted: {', '.join(GRAM_KEYS)}")
    gram.setdefault("file", None)
    gram.setdefault("init", True)
    gram.setdefault("regulate", True)
    gram.setdefault("regulator", None)
    if gram["file"] is None and (gram["init"] or (gram["regulate"] and gram["regulator"] is None)):
        raise CheckpointError("model.gram.file is not set: the meta-trained initialisation and regulator come from "
                              "a gram.safetensors written by tools/meta_train.py (or set init=False and "
                              "regulator=dict(type=...) for a regulator without a file)")
    return gram


@MODELS.register_module(force=True)
class GRAMModel(PromptModel):
    """A :class:`~vlprompt.engine.PromptModel` whose learner starts from and trains with a GRAM file.

    Args:
        backbone, learner, class_names, data_preprocessor: as :class:`PromptModel`.
        gram: ``file`` (a ``gram.safetensors``), ``init`` (load its initialisation), ``regulate``
            (apply its regulator to the gradients), ``regulator`` (a regulator config that replaces
            the file's, e.g. ``"identity"``).
    """

    def __init__(self, backbone: dict, learner: dict, class_names=None, gram: Mapping[str, Any] | None = None,
                 data_preprocessor: dict | None = None) -> None:
        super().__init__(backbone, learner, class_names, data_preprocessor)
        self.gram_cfg = gram_settings(gram)
        path = self.gram_cfg["file"]
        regulator: GradientRegulator | None = None
        gram_file = None
        if path is not None:
            gram_file = read_gram_file(path)
            check_gram_fits(gram_file, self.learner_cfg, self.backbone_cfg, path)
            check_same_weights(gram_file.weights, self.learner.backbone, path, "meta-trained")
            if self.gram_cfg["init"]:
                apply_init(self.learner, gram_file, path)
        if self.gram_cfg["regulate"]:
            if self.gram_cfg["regulator"] is not None:
                shapes = {n: tuple(p.shape) for n, p in prompt_parameters(self.learner).items()}
                regulator = build_regulator(self.gram_cfg["regulator"], shapes)
            else:
                regulator = gram_file.build_regulator()
            regulator.requires_grad_(False)
            regulator.to(self.learner.device)
        object.__setattr__(self, "_regulator", regulator)  # not a submodule: fixed, and not in checkpoints
        if regulator is not None and not regulator.is_identity:
            for name, param in prompt_parameters(self.learner).items():
                param.register_hook(partial(self._regulate, name))

    @property
    def regulator(self) -> GradientRegulator | None:
        return self._regulator

    def _regulate(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._regulator(name, grad)

    def _apply(self, fn, recurse: bool = True):  # noqa: D102 - .to()/.cuda() move the regulator too
        super()._apply(fn, recurse)
        if self._regulator is not None:
            self._regulator._apply(fn, recurse)
        return self

    @classmethod
    def check_config(cls, cfg) -> None:
        """Before any data is read: the GRAM file exists, is one, and fits the configured learner and backbone."""
        model = cfg.model
        gram = gram_settings(model.get("gram"))
        if gram["file"] is not None:
            learner = model.get("learner") or {}
            backbone = model.get("backbone") or {}
            check_gram_fits(read_gram_file(gram["file"]), dict(learner), dict(backbone), gram["file"])

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta["gram"] = dict(self.gram_cfg)
        return meta
