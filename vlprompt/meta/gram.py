"""GRAM meta-training: a prompt initialisation and a gradient regulator for any learner.

Li et al., "Gradient-Regulated Meta-Prompt Learning for Generalizable Vision-Language Models",
ICCV 2023. **Reimplemented from the paper**: no official code exists, and the paper's method section
was not available to us; what the abstract states is kept (a meta-learned soft-prompt initialisation
and a light gradient-regulating function, learned jointly from unlabelled image-text pairs through
tasks built by a cross-modal hierarchical clustering, bi-level, plugging into any prompt learner), and
every open choice is a setting of :class:`MetaSettings` (or of the clustering and tasks), listed in the
README.

One meta-iteration, for each of ``meta_batch`` episodes (a task of domain A, a query task of domain B):

* inner loop, ``inner_steps`` SGD steps on A's support set with the *regulated* gradient,
  ``theta <- theta - inner_lr * R_phi(grad L_support(theta))``, starting from the initialisation ``theta_0``;
* outer loss of the adapted prompt on B's query set (``outer_query="cross_domain"``; ``"same_task"``:
  A's own query set, as MAML; ``"both"``: their mean);

then one Adam step on ``theta_0`` and ``phi`` with the mean outer loss. First-order by default (the inner
gradients are constants, so ``d theta'/d theta_0 = I`` and ``d theta'/d phi = -inner_lr dR_phi/d phi``);
``second_order=True`` differentiates through the inner gradients too.

The learner is any registered one, unedited: its learned parameters are swapped for the fast weights
with :func:`torch.func.functional_call`. A learner whose image features do not depend on its
parameters (CoOp, KgCoOp...) trains on the cached image features; the others (VPT, MaPLe, IVLP /
UNIGRAM, PromptSRC) on the cached images. The meta-loss is the cross-entropy over the task's
pseudo-classes (a learner's own regularisers apply downstream).
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import CheckpointError, build_clip, check_tensor_values, check_tensors_fit, save_safetensors
from ..engine.checkpoint import comparable, describe_run, read_vlprompt_safetensors
from ..learners import PromptLearner, build_learner, list_learners, settings_as_built
from ..registry import LEARNERS
from .features import PairFeatures, normalise_images
from .regulator import REGULATORS, GradientRegulator, build_regulator
from .tasks import Task, TaskSampler

GRAM_FILE = "gram.safetensors"
STATE_FILE = "meta_state.pth"
OUTER_QUERIES = ("cross_domain", "same_task", "both")


@dataclass
class MetaSettings:
    """The bi-level optimisation (design choices the paper leaves open; defaults for the toy world).

    Args:
        iterations: outer (meta) steps.
        meta_batch: episodes averaged per outer step.
        inner_steps: regulated SGD steps on the support set.
        inner_lr: their step size.
        outer_lr: Adam learning rate of the prompt initialisation.
        regulator_lr: Adam learning rate of the regulator.
        second_order: differentiate through the inner gradients (memory and time x ~inner_steps).
        outer_query: ``cross_domain`` (the paper's), ``same_task`` (MAML's) or ``both``.
        learn_init / learn_regulator: what is meta-learned (the ablations turn one off).
        checkpoint_interval: outer steps between resumable states.
        seed: task sampling seed.
    """

    iterations: int = 200
    meta_batch: int = 2
    inner_steps: int = 5
    inner_lr: float = 0.02
    outer_lr: float = 1e-4
    regulator_lr: float = 1e-2
    second_order: bool = False
    outer_query: str = "cross_domain"
    learn_init: bool = True
    learn_regulator: bool = True
    checkpoint_interval: int = 25
    seed: int = 1

    def __post_init__(self) -> None:
        if self.outer_query not in OUTER_QUERIES:
            raise ValueError(f"meta.outer_query must be one of {OUTER_QUERIES}, got {self.outer_query!r}")
        for key in ("iterations", "meta_batch", "inner_steps", "checkpoint_interval"):
            if getattr(self, key) < 1:
                raise ValueError(f"meta.{key} must be >= 1, got {getattr(self, key)}")
        if not (self.learn_init or self.learn_regulator):
            raise ValueError("meta: learn_init and learn_regulator are both off: nothing to meta-learn")


def uses_frozen_image_features(learner: PromptLearner) -> bool:
    """Whether the learner's image features ignore its parameters (they can then be cached)."""
    return type(learner).encode_images is PromptLearner.encode_images


def prompt_parameters(learner: PromptLearner) -> dict[str, nn.Parameter]:
    """The learner's learned parameters, by name: what GRAM initialises and regulates."""
    return {n: p for n, p in learner.named_parameters() if p.requires_grad}


class _Episode(nn.Module):
    """The cross-entropy of a learner on a batch, as a module for :func:`torch.func.functional_call`."""

    def __init__(self, learner: PromptLearner) -> None:
        super().__init__()
        self.learner = learner

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor, cached: bool) -> torch.Tensor:
        learner = self.learner
        image = inputs if cached else learner.encode_images(inputs)
        classes = learner.encode_classes(image)
        return F.cross_entropy(learner.logits(image, classes.to(image.dtype)), labels)


class MetaLearner:
    """The state of a GRAM meta-training: the learner (its parameters are the initialisation being
    learned), the regulator, the outer optimiser and the task stream.

    Args:
        learner: any built prompt learner (not class-specific: the prompts must serve any class set).
        regulator: a :class:`GradientRegulator` for the learner's prompt parameters.
        features: the pairs' cached embeddings (and images when the learner prompts the image tower).
        sampler: the task sampler over the pairs' hierarchy.
        settings: the bi-level settings.
    """

    def __init__(self, learner: PromptLearner, regulator: GradientRegulator, features: PairFeatures,
                 sampler: TaskSampler, settings: MetaSettings) -> None:
        self.learner, self.regulator, self.features = learner, regulator, features
        self.sampler, self.settings = sampler, settings
        self.cached = uses_frozen_image_features(learner)
        if not self.cached and features.images is None:
            raise ValueError(f"{type(learner).__name__} prompts the image tower: meta-training needs the pairs' "
                             "images (encode_pairs(keep_images=True))")
        self.params = prompt_parameters(learner)
        if not self.params:
            raise ValueError(f"{type(learner).__name__} has no learned parameters to meta-learn")
        self._episode = _Episode(learner)
        groups = []
        if settings.learn_init:
            groups.append({"params": list(self.params.values()), "lr": settings.outer_lr})
        if settings.learn_regulator and list(regulator.parameters()):
            groups.append({"params": list(regulator.parameters()), "lr": settings.regulator_lr})
        if not groups:
            raise ValueError(f"meta: nothing to learn (learn_init={settings.learn_init}, regulator "
                             f"{regulator.regulator_name!r} has no parameters)")
        self.optimizer = torch.optim.Adam(groups)
        self.rng = np.random.default_rng(settings.seed)
        self.iteration = 0
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ losses
    def _inputs(self, indices: np.ndarray) -> torch.Tensor:
        device = self.learner.device
        if self.cached:
            return self.features.image[torch.as_tensor(indices)].to(device)
        return normalise_images(self.features.images[indices], self.learner.backbone)

    def task_loss(self, params: Mapping[str, torch.Tensor], task: Task, query: bool) -> torch.Tensor:
        """The learner's cross-entropy with ``params`` on the task's query (or support) set."""
        self.learner.set_classes(task.class_names)
        indices, labels = (task.query, task.query_labels) if query else (task.support, task.support_labels)
        inputs = self._inputs(indices)
        labels = torch.as_tensor(labels, device=inputs.device)
        weights = {f"learner.{n}": p for n, p in params.items()}
        return torch.func.functional_call(self._episode, weights, (inputs, labels, self.cached), strict=False)

    def adapt(self, task: Task, steps: int | None = None) -> tuple[dict[str, torch.Tensor], float]:
        """The fast weights after the regulated inner loop on ``task``'s support set, and the last support loss."""
        s = self.settings
        fast: dict[str, torch.Tensor] = dict(self.params)
        loss = torch.zeros(())
        for _ in range(s.inner_steps if steps is None else steps):
            loss = self.task_loss(fast, task, query=False)
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=s.second_order)
            fast = {n: w - s.inner_lr * self.regulator(n, g) for (n, w), g in zip(fast.items(), grads, strict=True)}
        return fast, float(loss.detach())

    def meta_step(self) -> dict[str, float]:
        """One outer step over ``meta_batch`` episodes; returns the mean losses.

        Second order runs attention through PyTorch's math kernel: the fused ones have no double backward.
        """
        if not self.settings.second_order:
            return self._meta_step()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.MATH]):
            return self._meta_step()

    def _meta_step(self) -> dict[str, float]:
        s = self.settings
        self.learner.train()
        self.optimizer.zero_grad(set_to_none=True)
        support_losses, outer_losses = [], []
        for _ in range(s.meta_batch):
            task, other = self.sampler.episode(self.rng)
            fast, support_loss = self.adapt(task)
            if s.outer_query == "cross_domain":
                outer = self.task_loss(fast, other, query=True)
            elif s.outer_query == "same_task":
                outer = self.task_loss(fast, task, query=True)
            else:
                outer = 0.5 * (self.task_loss(fast, task, query=True) + self.task_loss(fast, other, query=True))
            (outer / s.meta_batch).backward()
            support_losses.append(support_loss)
            outer_losses.append(float(outer.detach()))
        if not s.learn_init:
            for p in self.params.values():
                p.grad = None
        if not math.isfinite(sum(outer_losses)):
            raise FloatingPointError(f"meta-iteration {self.iteration}: the outer loss is not finite ({outer_losses}); "
                                     "lower meta.inner_lr or meta.outer_lr")
        self.optimizer.step()
        self.iteration += 1
        record = {"iteration": self.iteration, "support_loss": float(np.mean(support_losses)),
                  "outer_loss": float(np.mean(outer_losses))}
        self.history.append(record)
        return record

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, as tensors and plain data (``torch.load(weights_only=True)``)."""
        return {"iteration": self.iteration, "init": {n: p.detach().clone() for n, p in self.params.items()},
                "regulator": {k: v.detach().clone() for k, v in self.regulator.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "rng": json.dumps(self.rng.bit_generator.state),
                "history": json.dumps(self.history)}

    def load_state_dict(self, state: Mapping[str, Any], source: str | os.PathLike = "the meta-training state") -> None:
        """Resume from :meth:`state_dict`'s output; anything that does not fit is a :class:`CheckpointError`
        naming ``source`` (the state file) and the key, before anything is changed."""
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{source}: not a meta-training state (a {type(state).__name__}, not a mapping)")
        missing = [k for k in ("iteration", "init", "regulator", "optimizer", "rng", "history") if k not in state]
        if missing:
            raise CheckpointError(f"{source}: not a meta-training state (it lacks {', '.join(map(repr, missing))})")
        for key in ("init", "regulator", "optimizer"):
            if not isinstance(state[key], Mapping):
                raise CheckpointError(f"{source}: key {key!r} is a {type(state[key]).__name__}, not a mapping")
        check_tensors_fit(state["init"], {n: p.detach() for n, p in self.params.items()}, source,
                          "the learner's prompt parameters", "init.")
        check_tensors_fit(state["regulator"], self.regulator.state_dict(), source,
                          f"regulator {self.regulator.regulator_name!r}", "regulator.")
        try:
            rng, history, iteration = json.loads(state["rng"]), json.loads(state["history"]), int(state["iteration"])
            if not isinstance(history, list) or iteration < 0:
                raise ValueError(f"history {type(history).__name__}, iteration {iteration}")
            saved_rng = self.rng.bit_generator.state
            self.rng.bit_generator.state = rng
            optimizer = copy.deepcopy(self.optimizer.state_dict())
            self.optimizer.load_state_dict(state["optimizer"])
        except (TypeError, ValueError, KeyError, IndexError, json.JSONDecodeError, RuntimeError) as err:
            if "saved_rng" in locals():
                self.rng.bit_generator.state = saved_rng
            if "optimizer" in locals():
                self.optimizer.load_state_dict(optimizer)
            raise CheckpointError(f"{source}: its iteration, rng, history or optimizer state cannot be resumed "
                                  f"({type(err).__name__}: {err})") from None
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(state["init"][n])
        self.regulator.load_state_dict(state["regulator"])
        self.iteration, self.history = iteration, history


# ------------------------------------------------------------------------------------ the GRAM file
@dataclass
class GRAMFile:
    """A meta-trained file: the initialisation (``init.<param>``) and the regulator (``regulator.<key>``)
    of one learner on one backbone, with what produced them."""

    init: dict[str, torch.Tensor]
    regulator_state: dict[str, torch.Tensor]
    learner: dict[str, Any]  # {"type": name, **hparams}
    backbone: dict[str, Any]
    regulator: dict[str, Any]  # {"type": name, **settings}
    info: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None  # the backbone weights' digest (PromptableCLIP.weights_digest); None: not recorded

    def build_regulator(self) -> GradientRegulator:
        shapes = {n: tuple(t.shape) for n, t in self.init.items()}
        regulator = build_regulator(self.regulator, shapes)
        regulator.load_state_dict(self.regulator_state)
        return regulator


def save_gram_file(path: str | os.PathLike, learner: PromptLearner, backbone_cfg: Mapping[str, Any],
                   regulator: GradientRegulator, info: Mapping[str, Any]) -> Path:
    """Write the learner's current parameters as the initialisation, and the regulator, atomically."""
    tensors = {f"init.{n}": p.detach() for n, p in prompt_parameters(learner).items()}
    tensors.update({f"regulator.{k}": v.detach() for k, v in regulator.state_dict().items()})
    meta = {"kind": "gram", "learner": {"type": learner.learner_name, **learner.hparams()},
            "backbone": dict(backbone_cfg), "backbone_info": learner.backbone.info.to_dict(),
            "backbone_weights": learner.backbone.weights_digest,
            "regulator": {"type": regulator.regulator_name, **regulator.settings()}, "info": dict(info)}
    save_safetensors(tensors, path, {"vlprompt": json.dumps(meta, default=str)})
    return Path(path)


def read_gram_file(path: str | os.PathLike) -> GRAMFile:
    """Read a meta-trained file without executing anything from it: its learner and regulator must be
    registered names, its tensors only ``init.*`` and ``regulator.*``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"GRAM file not found: {path} (make it with tools/meta_train.py <config>)")
    tensors, meta = read_vlprompt_safetensors(path)
    if not isinstance(meta, dict) or meta.get("kind") != "gram":
        kind = meta.get("kind") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{path}: not a GRAM meta-trained file (metadata kind={kind!r}; "
                              "a learned.safetensors goes to load_from=, not gram.file=)")
    for key in ("learner", "regulator", "backbone", "info"):
        if not isinstance(meta.get(key) or {}, dict):
            raise CheckpointError(f"{path}: metadata key {key!r} = {meta[key]!r} is not a mapping")
    learner, regulator = meta.get("learner") or {}, meta.get("regulator") or {}
    if learner.get("type") not in LEARNERS.module_dict:
        raise CheckpointError(f"{path}: metadata key 'learner.type' = {learner.get('type')!r} is not a registered "
                              f"learner (registered: {', '.join(list_learners())})")
    if regulator.get("type") not in REGULATORS.module_dict:
        raise CheckpointError(f"{path}: metadata key 'regulator.type' = {regulator.get('type')!r} is not a "
                              f"registered regulator ({', '.join(sorted(REGULATORS.module_dict))})")
    bad = sorted(k for k in tensors if not k.startswith(("init.", "regulator.")))
    if bad:
        raise CheckpointError(f"{path}: unexpected tensors {bad[:5]} (a GRAM file holds init.* and regulator.*)")
    init = {k[len("init."):]: v for k, v in tensors.items() if k.startswith("init.")}
    reg = {k[len("regulator."):]: v for k, v in tensors.items() if k.startswith("regulator.")}
    # the initialisation: floating and finite (its shapes are checked against the run's learner when applied)
    check_tensor_values(init, {k: torch.empty(0) for k in init}, path, "init.")
    try:  # the regulator the file records, built as training will build it, and its tensors checked against it
        like = build_regulator(regulator, {n: tuple(t.shape) for n, t in init.items()}).state_dict()
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: metadata key 'regulator' = {regulator!r} does not build a regulator "
                              f"({err})") from None
    check_tensors_fit(reg, like, path, f"regulator {regulator['type']!r}", "regulator.")
    weights = meta.get("backbone_weights")
    if weights is not None and not isinstance(weights, str):
        raise CheckpointError(f"{path}: metadata key 'backbone_weights' = {weights!r} is not a weights digest")
    return GRAMFile(init, reg, dict(learner), dict(meta.get("backbone") or {}), dict(regulator),
                    dict(meta.get("info") or {}), weights)


def check_gram_fits(gram: GRAMFile, learner_cfg: Mapping[str, Any], backbone_cfg: Mapping[str, Any],
                    path: str | os.PathLike) -> None:
    """Stop (naming both) when the file was meta-trained for another learner, prompt layout or backbone
    than the run's: every hyper-parameter the file records must be what the run's learner builds."""
    wanted = dict(learner_cfg)
    built = settings_as_built(wanted)  # n_ctx=80 with a 4-token phrase builds (and records) 4
    differs = [k for k in sorted(set(gram.learner) | {"type"})
               if k in built and comparable(built[k]) != comparable(gram.learner.get(k))]
    if gram.learner.get("type") != wanted.get("type"):
        differs = ["type", *[k for k in differs if k != "type"]]
    if differs or gram.backbone.get("name") != backbone_cfg.get("name"):
        what = ", ".join(differs + ([] if gram.backbone.get("name") == backbone_cfg.get("name") else ["backbone"]))
        raise CheckpointError(
            f"gram.file={path} was meta-trained for {describe_run(gram.learner, gram.backbone.get('name'))}, but this "
            f"run trains {describe_run(wanted, backbone_cfg.get('name'))} (they differ in: {what}); meta-train one for "
            f"this learner with tools/meta_train.py")


def apply_init(learner: PromptLearner, gram: GRAMFile, path: str | os.PathLike) -> None:
    """Copy the meta-learned initialisation into the learner's parameters (shapes checked, names named)."""
    params = prompt_parameters(learner)
    if set(params) != set(gram.init):
        raise CheckpointError(f"{path}: its initialisation has parameters {sorted(gram.init)}, the learner "
                              f"{sorted(params)}")
    with torch.no_grad():
        for n, p in params.items():
            if tuple(p.shape) != tuple(gram.init[n].shape):
                raise CheckpointError(f"{path}: init.{n} has shape {tuple(gram.init[n].shape)}, the learner's "
                                      f"{tuple(p.shape)} (backbone {learner.backbone.arch!r})")
            p.copy_(gram.init[n].to(p.device, p.dtype))


def build_meta_learner(
    learner_cfg: Mapping[str, Any], backbone_cfg: Mapping[str, Any], regulator_cfg: Mapping[str, Any],
    class_names: list[str],
) -> tuple[PromptLearner, GradientRegulator]:
    """The learner to meta-train (built with placeholder classes) and its regulator."""
    hparams = dict(learner_cfg)
    name = hparams.pop("type")
    if hparams.get("class_specific"):
        raise ValueError("GRAM meta-learns one prompt for every task's classes: class_specific=True cannot be "
                         "meta-trained (its contexts belong to fixed classes)")
    learner = build_learner(name, build_clip(**backbone_cfg), class_names, **hparams)
    shapes = {n: tuple(p.shape) for n, p in prompt_parameters(learner).items()}
    return learner, build_regulator(regulator_cfg, shapes)


__all__ = [
    "GRAM_FILE", "OUTER_QUERIES", "STATE_FILE", "GRAMFile", "MetaLearner", "MetaSettings", "apply_init",
    "build_meta_learner", "check_gram_fits", "prompt_parameters", "read_gram_file", "save_gram_file",
    "uses_frozen_image_features",
]
