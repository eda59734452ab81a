"""CoOp: learned context vectors in place of a hand-written prompt.

Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022.
The text input of class ``c`` is ``[SOS] [V]_1 ... [V]_M [CLASS_c] . [EOS]`` with the M context
vectors learned (shared by all classes, or one set per class). They start from the word
embeddings of an initial phrase ("a photo of a") or from N(0, 0.02^2). The class token may also
go first or in the middle of the context.

With ``descriptions`` (PCB's description augmentation, Bang et al. CVPR 2024, kaist-dmlab/pcb
``trainers/alvlm.py``) class ``c`` has one prompt per description, ``[SOS] [V]_1 ... [V]_M {class},
which is/has {description}. [EOS]`` (its own context for class-specific contexts), and its score is
the mean of their logits (``"AS"``) or the logit of the normalised mean of their unnormalised text
features (``"AE"``), as in the official code. A class without a description keeps ``{class}.``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import PromptableCLIP, TextPrompts
from ..datasets.knowledge import check_coverage
from .base import PromptLearner, register_learner
from .common import (
    CLASS_TOKEN_POSITIONS,
    context_insertions,
    description_source,
    fit_to_context,
    init_context,
    phrase_sized_settings,
    prompt_class_name,
    setting_or_default,
)

DESCRIPTION_MODES = ("AS", "AE")
"""Description augmentation: average the logits (AS) or the text embeddings (AE) over a class's descriptions."""


@register_learner("coop")
class CoOp(PromptLearner):
    """Context optimisation.

    Args:
        backbone: the frozen CLIP (or its build arguments).
        class_names: class names, in label order.
        n_ctx: number of context vectors (ignored when ``ctx_init`` gives the words).
        ctx_init: initial phrase, e.g. ``"a photo of a"``; empty for random init.
        class_specific: one context per class (CSC) instead of a shared one; the class count
            is then fixed at construction. Only with random init: as in the official CoOp (whose
            ``CSC`` applies only when ``CTX_INIT`` is empty), a ``ctx_init`` phrase gives one shared
            context, and ``class_specific`` is then ignored with a warning.
        class_token_position: ``"end"``, ``"middle"`` or ``"front"``.
        descriptions: ``None``, or a description source (a path, ``dict(file=...)``,
            ``dict(dataset=<name>)``; :func:`vlprompt.datasets.knowledge.resolve_descriptions`):
            one prompt per description (class token at the end only).
        descriptions_text: the descriptions' text, ``{class: [sentences]}``, as a checkpoint records it
            (:meth:`hparams` writes it); when given, ``descriptions`` is only the record of where it
            came from and is never read (:func:`~vlprompt.learners.common.description_source`).
        description_mode: ``"AS"`` (mean of the logits) or ``"AE"`` (mean of the text embeddings).
        description_template: how a description follows the class name (PCB's by default).
        on_missing: ``"warn"``, ``"error"`` or ``"ignore"`` for classes without a description.
    """

    def __init__(
        self,
        backbone: PromptableCLIP | dict,
        class_names: Sequence[str],
        n_ctx: int = 16,
        ctx_init: str | None = "",
        class_specific: bool = False,
        class_token_position: str = "end",
        descriptions: str | dict | None = None,
        description_mode: str = "AE",
        description_template: str = "{class}, which is/has {description}.",
        on_missing: str = "warn",
        descriptions_text: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(backbone, class_names)
        if class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(f"class_token_position must be end, middle or front, got {class_token_position!r}")
        if description_mode not in DESCRIPTION_MODES:
            raise ValueError(f"description_mode must be one of {DESCRIPTION_MODES}, got {description_mode!r}")
        described = descriptions is not None or descriptions_text is not None
        if described and class_token_position != "end":
            raise ValueError("CoOp with descriptions puts the class name and its description at the end; "
                             f"class_token_position={class_token_position!r} is not supported with them")
        self.descriptions = descriptions
        self._source, self.descriptions_text = description_source(descriptions, descriptions_text, "descriptions")
        self.description_mode = description_mode
        self.description_template = description_template
        self.on_missing = on_missing
        ctx, _ = init_context(self.backbone, n_ctx, ctx_init, who=self.learner_name)
        if class_specific and ctx_init:
            warnings.warn(f"CoOp: class_specific=True is ignored with ctx_init={ctx_init!r}: the context starts from "
                          "the phrase and is shared by all classes, as in the official CoOp (CSC applies only to "
                          "random init; set ctx_init='' for class-specific contexts)", UserWarning, stacklevel=2)
            class_specific = False
        if class_specific:
            ctx = torch.randn(len(class_names), n_ctx, self.backbone.text_width) * 0.02
        self.ctx = nn.Parameter(ctx.to(self.device))
        self.n_ctx = ctx.shape[-2]
        self.prompt_length = self.n_ctx
        # what was built: a phrase gives its own number of vectors, whatever n_ctx asked for
        self._hparams = dict(n_ctx=self.n_ctx, ctx_init=ctx_init, class_specific=class_specific,
                             class_token_position=class_token_position)
        if described:  # a plain CoOp's record stays what it was; a described one carries the text
            self._hparams.update(descriptions=descriptions, description_mode=description_mode,
                                 description_template=description_template, on_missing=on_missing,
                                 descriptions_text=self.descriptions_text)
        self.class_token_position = class_token_position
        self.finish_init()

    def class_set_problem(self, class_names: Sequence[str]) -> str | None:
        """Class-specific contexts belong to the classes the learner was built with, in their order: any other
        list (another count, other names, the same names reordered) would pair a class with another's context."""
        if self.ctx.dim() == 3 and list(class_names) != self._init_class_names:
            return (f"{type(self).__name__} with class-specific contexts learned one context per trained class "
                    f"({self.ctx.shape[0]} classes, in their order)")
        return None

    def set_classes(self, class_names: Sequence[str]) -> None:
        if self.ctx.dim() == 3 and len(class_names) != self.ctx.shape[0]:
            raise ValueError(
                f"class-specific context was learned for {self.ctx.shape[0]} classes; "
                f"it cannot serve {len(class_names)} other classes"
            )
        super().set_classes(class_names)

    def tokenize_classes(self, class_names: Sequence[str]) -> torch.Tensor:
        """``{class}.`` per class; with descriptions one row per description (``prompt_owner``: whose)."""
        if self._source is None:
            return super().tokenize_classes(class_names)
        check_coverage(self._source, class_names, "CoOp's classes", self.on_missing)
        texts, owner = [], []
        for c, name in enumerate(class_names):
            label = prompt_class_name(name)

            def render(text: str, label: str = label) -> str:
                return self.description_template.replace("{class}", label).replace("{description}", text)

            found = [d.strip() for d in self._source.lookup(name) if d.strip()]
            rows = [render(fit_to_context(self.backbone, render, d, reserve=self.prompt_length)) for d in found]
            texts += rows or [f"{label}."]
            owner += [c] * max(len(rows), 1)
        self.prompt_owner = torch.tensor(owner, dtype=torch.long, device=self.device)
        return self.backbone.tokenize(texts, reserve=self.prompt_length)

    def text_prompts(self, ctx: torch.Tensor) -> TextPrompts:
        """Where the context goes for the configured class-token position."""
        return TextPrompts(insert=context_insertions(self.class_token_ids, ctx, self.class_token_position))

    def _class_mean(self, rows: torch.Tensor, dim: int) -> torch.Tensor:
        """The mean over each class's description rows along ``dim`` (rows -> classes)."""
        owner = self.prompt_owner.to(rows.device)
        shape = list(rows.shape)
        shape[dim] = len(self.class_names)
        total = rows.new_zeros(shape).index_add_(dim, owner, rows)
        counts = torch.bincount(owner, minlength=len(self.class_names)).to(rows.dtype)
        return total / counts.view([-1 if d == dim else 1 for d in range(rows.dim())])

    def encode_classes(self, image_features: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        if self._source is None:
            return self.backbone.encode_text(self.class_token_ids, self.text_prompts(self.ctx), normalize=normalize)
        if not normalize:
            raise ValueError("CoOp with descriptions has no single raw feature per class (its rows are averaged)")
        # each description row gets its class's context (class-specific) or the shared one
        ctx = self.ctx[self.prompt_owner.to(self.ctx.device)] if self.ctx.dim() == 3 else self.ctx
        if self.description_mode == "AS":  # normalised rows; logits() averages their scores
            return self.backbone.encode_text(self.class_token_ids, self.text_prompts(ctx), normalize=True)
        rows = self.backbone.encode_text(self.class_token_ids, self.text_prompts(ctx), normalize=False)
        return F.normalize(self._class_mean(rows, 0), dim=-1)

    def logits(self, image_features: torch.Tensor, class_features: torch.Tensor) -> torch.Tensor:
        logits = super().logits(image_features, class_features)
        if self._source is not None and self.description_mode == "AS":
            return self._class_mean(logits, logits.dim() - 1)
        return logits

    def hparams(self) -> dict:
        return dict(self._hparams)

    @classmethod
    def settings_as_built(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """A phrase sizes ``n_ctx`` and makes the context shared (``class_specific`` is built False)."""
        built = phrase_sized_settings(cls, settings)
        ctx_init = setting_or_default(cls, settings, "ctx_init")
        if built.get("class_specific") and ctx_init and isinstance(ctx_init, str):
            built["class_specific"] = False
        return built
