"""Zero-shot CLIP: hand-written templates, nothing learned (the baseline of every table).

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.
CoOp's ``ZeroshotCLIP`` uses one hand-crafted template per dataset; ``ZeroshotCLIP2`` the ensemble
of the 7 selected ImageNet templates. Both are this class with other ``templates``.

With ``descriptions`` (a :mod:`vlprompt.datasets.knowledge` source) a class's feature is instead
the normalised mean over one prompt per description, ``"{class}, which is {description}"``
(Menon & Vondrick, "Visual Classification via Description from Large Language Models", ICLR 2023);
a description that already names its class is used as written (CuPL, Pratt et al., ICCV 2023).
This is what descriptions alone give, the baseline of knowledge-aware learners such as KAPT.
Classes without a description fall back to the templates (and are reported).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..backbones import PromptableCLIP
from ..datasets.knowledge import check_coverage, match_key
from ..datasets.templates import resolve_templates
from .base import PromptLearner, register_learner
from .common import (
    class_text_features,
    description_source,
    fit_to_context,
    prompt_class_name,
    prompt_set_features,
)


@register_learner("zsclip")
class ZeroShotCLIP(PromptLearner):
    """CLIP with fixed prompts: one template, the normalised mean over several, or over class descriptions.

    Args:
        backbone: the frozen CLIP (or its build arguments).
        class_names: class names, in label order.
        templates: one template or a list (``"{}"`` is the class name), or a set's name
            (:data:`~vlprompt.datasets.templates.TEMPLATE_SETS`: ``"imagenet-select"``, ``"clip-imagenet"``).
        descriptions: ``None``, or a description source (a path, ``dict(file=..., field=...)``,
            ``dict(dataset=<name>)``, ``dict(descriptions={...})``; see
            :func:`vlprompt.datasets.knowledge.resolve_descriptions`).
        description_template: the prompt of one description; ``{class}`` and ``{description}``.
        with_templates: also average the template prompts into each described class.
        on_missing: ``"warn"``, ``"error"`` or ``"ignore"`` for classes without a description.
        descriptions_text: the descriptions' text, ``{class: [sentences]}``, as a checkpoint records it
            (:meth:`hparams` writes it); when given, ``descriptions`` is only the record of where it
            came from and is never read (:func:`~vlprompt.learners.common.description_source`).
    """

    def __init__(
        self,
        backbone: PromptableCLIP | dict,
        class_names: Sequence[str],
        templates: str | Sequence[str] = "a photo of a {}.",
        descriptions: str | dict | None = None,
        description_template: str = "{class}, which is {description}",
        with_templates: bool = False,
        on_missing: str = "warn",
        descriptions_text: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(backbone, class_names)
        self.templates = resolve_templates(templates)
        self.descriptions = descriptions
        self._source, self.descriptions_text = description_source(descriptions, descriptions_text, "descriptions")
        self.description_template = description_template
        self.with_templates = bool(with_templates)
        self.on_missing = on_missing
        self.register_buffer("class_features", torch.zeros(0), persistent=False)
        self.finish_init()

    def description_prompts(self, name: str) -> list[str]:
        """The prompts of class ``name`` from its descriptions (``[]`` without any), each fitted to the context."""
        label = prompt_class_name(name)

        def as_written(text: str) -> str:
            return text

        def templated(text: str) -> str:
            return self.description_template.replace("{class}", label).replace("{description}", text)

        out = []
        for text in self._source.lookup(name):
            text = text.strip()
            if match_key(label) in match_key(text):  # CuPL style: the sentence names its class
                render = as_written
            else:
                first = text.split()[0]
                if not (len(first) > 1 and first.isupper()):  # "A domesticated ..." -> "a domesticated ...", not "DNA"
                    text = text[0].lower() + text[1:]
                render = templated
            out.append(render(fit_to_context(self.backbone, render, text)))
        return out

    def set_classes(self, class_names: Sequence[str]) -> None:
        super().set_classes(class_names)
        if self._source is None:
            self.class_features = class_text_features(self.backbone, self.class_names, self.templates)
            return
        check_coverage(self._source, self.class_names, "the zero-shot classes", self.on_missing)
        templates = [[t.format(prompt_class_name(n)) for t in self.templates] for n in self.class_names]
        prompts = []
        for name, fixed in zip(self.class_names, templates, strict=True):
            described = self.description_prompts(name)
            prompts.append(described + fixed if described and self.with_templates else described or fixed)
        self.class_features = prompt_set_features(self.backbone, prompts)

    def tokenize_classes(self, class_names: Sequence[str]) -> torch.Tensor:
        return self.backbone.tokenize([self.templates[0].format(prompt_class_name(n)) for n in class_names])

    def encode_classes(self, image_features: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        if not normalize:
            raise ValueError("zero-shot CLIP's class features are its templates' mean, kept normalised")
        return self.class_features

    def hparams(self) -> dict:
        out = {"templates": self.templates}
        if self._source is not None:  # the plain baseline's record stays what it was; a described one has the text
            out.update(descriptions=self.descriptions, description_template=self.description_template,
                       with_templates=self.with_templates, on_missing=self.on_missing,
                       descriptions_text=self.descriptions_text)
        return out
