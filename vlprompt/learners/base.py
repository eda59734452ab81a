"""What every prompt learner shares: the frozen backbone, the class names, logits and the loss.

A learner subclass adds only its learnable parameters, how they enter the towers (through the
backbone's :class:`~vlprompt.backbones.TextPrompts` / :class:`~vlprompt.backbones.ImagePrompts`),
and any extra loss term. The class set can change at any time (base classes for training, novel
classes at test): learned parameters never depend on it, and :meth:`PromptLearner.set_classes`
rebuilds only the cached class tokens.

The backbone is held outside the module tree: it is shared and frozen, so ``state_dict()``,
``parameters()`` and DDP see only what the learner owns, and checkpoints stay small. Moving or
casting the learner (``.to()``, ``.cuda()``, ``.half()``) moves the backbone with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import PromptableCLIP, build_clip
from ..registry import LEARNERS
from .common import DEFAULT_TEMPLATE, class_text_features, prompt_class_name


class RunData(Protocol):
    """The data of a training run that a learner may read outside its steps (the engine serves it): the training
    set once, in a fixed order, through the training pipeline, and the split hyper-parameters are chosen on
    (``tune_dataloader`` of the config; ``None`` without one). Batches are ``(images, labels)`` on the learner's
    device."""

    def train_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def tune_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]] | None: ...


class PromptLearner(nn.Module):
    """Base class of prompt learners (and of zero-shot CLIP, the learner with nothing to learn).

    Subclasses implement :meth:`encode_classes` (and :meth:`encode_images` when image features
    depend on learned parameters) and may add terms in :meth:`extra_losses`.

    Args:
        backbone: a built :class:`PromptableCLIP`, or a dict ``{"name": ..., "pretrained": ...}``
            passed to :func:`vlprompt.backbones.build_clip`.
        class_names: the class names of the current task, in label order.
    """

    #: registry name (``LEARNERS``) and the name recorded in checkpoints
    learner_name: ClassVar[str] = ""
    #: class features depend on the image (CoCoOp): they cannot be cached for a whole evaluation
    image_conditioned_text: ClassVar[bool] = False
    #: context slots the learner inserts into every class prompt (checked against the context)
    prompt_length: int = 0
    #: a fixed scale of the cosine logits in place of the backbone's learned temperature (CLIP-LoRA and
    #: Tip-Adapter use 100); ``None``: the backbone's
    logit_scale: float | None = None

    def __init__(self, backbone: PromptableCLIP | dict, class_names: Sequence[str]) -> None:
        super().__init__()
        if isinstance(backbone, dict):
            backbone = build_clip(**backbone)
        object.__setattr__(self, "_backbone", backbone)  # not a submodule: frozen and shared
        self.register_buffer("class_token_ids", torch.zeros(0, dtype=torch.long), persistent=False)
        self.class_names: list[str] = []
        self._eval_text_cache: torch.Tensor | None = None
        self._init_class_names = list(class_names)

    # ------------------------------------------------------------------ backbone
    @property
    def backbone(self) -> PromptableCLIP:
        return self._backbone

    def _apply(self, fn, recurse: bool = True):  # noqa: D102 - nn.Module hook for .to()/.cuda()/.half()
        super()._apply(fn, recurse)
        self._backbone._apply(fn, recurse)
        self._eval_text_cache = None
        return self

    def train(self, mode: bool = True) -> PromptLearner:
        """Training mode for the learner's own modules; the backbone stays frozen in eval mode."""
        super().train(mode)
        self._backbone.train(mode)
        self._eval_text_cache = None
        return self

    @property
    def device(self) -> torch.device:
        return self._backbone.device

    def require_vit(self, hint: str = "") -> None:
        """Fail at construction, naming the learner and the backbone, when image prompts need a ViT."""
        if not self._backbone.is_vit:
            raise ValueError(f"{type(self).__name__} prompts the image tower, which needs a ViT; "
                             f"{self._backbone.arch} has none{f' ({hint})' if hint else ''}")

    # ------------------------------------------------------------------ classes
    def class_set_problem(self, class_names: Sequence[str]) -> str | None:
        """Why the learned parameters cannot classify ``class_names``, or ``None`` when they can: learned
        parameters do not depend on the class set, so any list will do; a learner whose parameters belong to
        the classes it was built with overrides this and names the reason (:class:`vlprompt.zeroshot.
        PromptedClassifier` asks before switching classes)."""
        return None

    def set_classes(self, class_names: Sequence[str]) -> None:
        """Switch to another class set; learned parameters are untouched."""
        names = list(class_names)
        if not names:
            raise ValueError("a learner needs at least one class name")
        self.class_names = names
        self.class_token_ids = self.tokenize_classes(names).to(self.device)
        self._eval_text_cache = None

    def tokenize_classes(self, class_names: Sequence[str]) -> torch.Tensor:
        """Token ids of the class prompts the learner's prompts are inserted into.

        The default is ``"{name}."``, with :attr:`prompt_length` context slots reserved. Every
        learner writes a class name as :func:`~vlprompt.learners.common.prompt_class_name` does
        (``sea_lion`` -> ``sea lion``), as the official trainers do; :attr:`class_names` keeps the
        names as given.
        """
        names = [prompt_class_name(name) for name in class_names]
        return self._backbone.tokenize([f"{name}." for name in names], reserve=self.prompt_length)

    def finish_init(self) -> None:
        """Subclasses call this at the end of ``__init__``, once their prompt sizes are known."""
        self.set_classes(self._init_class_names)

    # ------------------------------------------------------------------ features
    def encode_classes(self, image_features: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        """Class features ``(C, E)``, or ``(B, C, E)`` for image-conditioned learners (which take the normalised
        ``image_features``); ``normalize=False`` gives them before the L2 norm (a head over the raw features,
        DePT's)."""
        raise NotImplementedError

    def encode_images(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Image features ``(B, E)``, L2-normalised unless ``normalize=False``; frozen unless the learner prompts
        the image tower."""
        return self._backbone.encode_image(images, normalize=normalize)

    def cosine_scale(self) -> torch.Tensor | float:
        """The scale of the cosine logits: :attr:`logit_scale`, else the backbone's learned temperature (what an
        adapter over the learner's features must use too)."""
        return self._backbone.logit_scale if self.logit_scale is None else self.logit_scale

    def logits(self, image_features: torch.Tensor, class_features: torch.Tensor) -> torch.Tensor:
        """Temperature-scaled cosine similarities ``(B, C)`` (:meth:`cosine_scale`)."""
        scale = self.cosine_scale()
        if class_features.dim() == 3:  # one set of class features per image
            return scale * torch.einsum("be,bce->bc", image_features, class_features)
        return scale * image_features @ class_features.t()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C)`` for the current class set; text features are cached in eval mode."""
        return self.class_logits(self.encode_images(images))

    def class_logits(self, image_features: torch.Tensor) -> torch.Tensor:
        """Logits of normalised image features against the current classes (cached in eval mode)."""
        if self.training or self.image_conditioned_text:
            class_features = self.encode_classes(image_features)
        else:
            if self._eval_text_cache is None:
                with torch.no_grad():
                    self._eval_text_cache = self.encode_classes()
            class_features = self._eval_text_cache
        return self.logits(image_features, class_features.to(image_features.dtype))

    # ------------------------------------------------------------------ loss
    def loss(self, images: torch.Tensor, labels: torch.Tensor,
             ce_logits: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Named loss terms (each is logged; their sum is optimised).

        ``ce_logits`` maps the logits the cross-entropy sees (a multitask run's per-task mask); the
        extra terms see the logits unchanged.
        """
        image_features = self.encode_images(images)
        class_features = self.encode_classes(image_features)
        logits = self.logits(image_features, class_features.to(image_features.dtype))
        losses = {"loss_ce": F.cross_entropy(logits if ce_logits is None else ce_logits(logits), labels)}
        losses.update(self.extra_losses(images, labels, image_features, class_features, logits))
        return losses

    def extra_losses(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        image_features: torch.Tensor,
        class_features: torch.Tensor,
        logits: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Method-specific loss terms (KgCoOp's knowledge guidance, PromptSRC's regularisers)."""
        return {}

    # ------------------------------------------------------------------ state
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: D102
        self._eval_text_cache = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def learned_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint needs: the parameters that training changes and the learner's persistent buffers (state
        kept beside them: PromptKD's BatchNorm statistics), i.e. :meth:`state_dict` less any frozen parameter."""
        frozen = {k for k, v in self.named_parameters() if not v.requires_grad}
        return {k: v.detach() for k, v in self.state_dict(keep_vars=True).items() if k not in frozen}

    def hparams(self) -> dict[str, Any]:
        """Constructor arguments (besides backbone and class names) to rebuild the learner."""
        return {}

    def adopt_learned(self, state: Mapping[str, torch.Tensor], recorded: Mapping[str, Any], path: Any) -> None:
        """Before a learned file (``state`` and its ``recorded`` learner settings) is loaded into this learner built
        from a config: a learner whose state is sized or tuned by its data (Tip-Adapter's cache, its searched alpha
        and beta) takes those from the file; errors name ``path``. Most learners need nothing."""

    # ------------------------------------------------------------------ data outside the steps
    def before_training(self, data: RunData) -> dict[str, Any] | None:
        """Once before the first step: a learner that builds state from its training set (Tip-Adapter's cache of
        few-shot features) does it here. Returns what is worth logging, or ``None``. Most learners need nothing."""
        return None

    def after_training_epoch(self, data: RunData) -> dict[str, Any] | None:
        """After each training epoch (choosing an epoch on the tuning split)."""
        return None

    def after_training(self, data: RunData) -> dict[str, Any] | None:
        """After the last step, before the learned file is written (a hyper-parameter search on the tuning
        split)."""
        return None

    @classmethod
    def settings_as_built(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The :meth:`hparams` a learner built from the config's ``settings`` records, as far as they can be told
        without building it: how a config is compared with the files a run wrote (a resumed checkpoint, a GRAM
        file). By default the settings themselves; learners that build other than they were asked override."""
        return dict(settings)


L = TypeVar("L", bound=type[PromptLearner])


def register_learner(name: str) -> Callable[[L], L]:
    """Class decorator: a learner states its name once; it becomes its ``learner_name`` and its name
    in :data:`~vlprompt.registry.LEARNERS` (what configs and checkpoint metadata call it)."""

    def deco(cls: L) -> L:
        cls.learner_name = name
        return LEARNERS.register_module(name=name, module=cls)

    return deco


class TemplateClassLearner(PromptLearner):
    """A learner whose class side is the frozen text features of one hand-written ``template``
    (VPT, MVPT): they are encoded once per class set, when the classes are set."""

    template: str = DEFAULT_TEMPLATE

    def init_template(self, template: str) -> None:
        """Subclasses call this before :meth:`finish_init`."""
        self.template = template
        self.register_buffer("class_features", torch.zeros(0), persistent=False)

    def set_classes(self, class_names: Sequence[str]) -> None:
        """Switch classes; their (frozen) text features are encoded once here."""
        super().set_classes(class_names)
        self.class_features = class_text_features(self.backbone, self.class_names, self.template)

    def tokenize_classes(self, class_names: Sequence[str]) -> torch.Tensor:
        return self._backbone.tokenize([self.template.format(prompt_class_name(n)) for n in class_names])

    def encode_classes(self, image_features: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        if not normalize:
            raise ValueError(f"{type(self).__name__}'s class features are the frozen template's, kept normalised")
        return self.class_features
