"""KAPT: knowledge-aware prompt tuning (reimplemented from the paper; no official code exists).

Kan, Wang, Lu, Zhen, Guan, Zheng, "Knowledge-Aware Prompt Tuning for Generalizable Vision-Language
Models", ICCV 2023 (arXiv 2308.11186). No implementation was ever published, and only the paper's
abstract could be read: this is vlprompt's reimplementation of what the abstract describes, and
every choice the text leaves open is a hyper-parameter, named below. Its numbers are not those of
the paper.

What the abstract fixes, and how it is built here:

* **Discrete knowledge prompt** ("extracts the key information from descriptions of an object
  category"): each class's description (a :mod:`vlprompt.datasets.knowledge` source) is reduced
  to its key information and written beside the class name, ``[SOS] [V]_1..[V]_M {class}, {key
  information}. [EOS]``. ``extract`` picks how: ``"tfidf"`` (the ``n_keywords`` words of highest
  TF-IDF across the task's classes, in the order they appear), ``"clause"`` (the leading clause of
  the first description), ``"sentence"`` (its first sentence) or ``"full"``. Text that would
  overflow the context is cut at a word boundary (reported once per class set).
* **Continuous prompt** ("captures overall contexts"): CoOp's ``n_ctx`` learned vectors shared by
  all classes, initialised from ``ctx_init``. With ``branches="two"`` (the default; "two
  complementary prompts") the continuous prompt ``[V] {class}.`` and the knowledge prompt
  ``[V] {class}, {key information}.`` share the vectors, are encoded apart and their features
  averaged; ``"joint"`` encodes the single prompt that holds both.
* **Visual adaptation head** ("aggregates salient attentive visual cues"): attention pooling over
  the image tower's patch tokens (a learned query, or the class token's pooled feature as the
  query), added to the normalised pooled feature with a residual ratio,
  ``f = normalize((1 - ratio) * f_clip + ratio * attn_pool(f_clip, patches))``. Its output
  projection starts at zero, so training starts from the frozen CLIP's image feature.

Loss: cross-entropy plus a knowledge-consistency term ``loss_kc = w_text * (1 - mean_c cos(t_c,
t_c^kn))`` that keeps each learned class feature near frozen CLIP features of hand-written prompts
(KgCoOp's term; ``kc_target``: the knowledge prompt ``"{ctx_init} {class}, {key information}."``,
the template ``"{ctx_init} {class}."``, or by default the normalised mean of both), and
optionally ``loss_vc = w_image * (1 - mean cos(f, f_clip))`` on the image side. The frozen
backbone never learns; the context vectors and the head are all that do.

Choices taken where the paper is silent (each a setting): the description source (config key
``knowledge``), the extraction rule and key-word count, the text layout (``knowledge_template``),
one prompt or two branches (``branches``, ``knowledge_weight``), the context length and initialisation
(CoOp's 4 vectors from "a photo of a"), the head's query, width, number of heads and residual
ratio, zero-initialised head output, the consistency terms, their targets and weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import PromptableCLIP, TextPrompts, TokenInsertion
from ..datasets.knowledge import (
    Descriptions,
    check_coverage,
    key_words,
    leading_clause,
    split_sentences,
)
from .base import PromptLearner, register_learner
from .common import description_source, fit_to_context, init_context, phrase_sized_settings, prompt_class_name

EXTRACTIONS = ("tfidf", "clause", "sentence", "full")
HEAD_QUERIES = ("cls", "learned")
KC_TARGETS = ("knowledge", "template", "both")
BRANCHES = ("joint", "two")


def print_log(msg: str, **kwargs: Any) -> None:
    """mmengine's ``print_log``, imported when first used (importing the learners needs no mmengine)."""
    from mmengine.logging import print_log as mmengine_print_log

    mmengine_print_log(msg, **kwargs)


class AttentionPoolingHead(nn.Module):
    """Attention pooling over patch tokens, mixed into the pooled image feature by a residual ratio.

    ``q = W_q query``, ``k = W_k p_i``, ``v = W_v p_i`` over the L2-normalised patch tokens ``p_i``
    (``hidden = dim // reduction`` wide, split in ``heads``), ``a = W_o sum_i softmax_i(q.k_i /
    sqrt(d)) v_i``, and the output is ``normalize((1 - ratio) * f + ratio * a)`` with ``f`` the
    normalised pooled feature. The query is ``f`` itself (``query="cls"``: each image attends to
    the patches that agree with its global feature) or one learned vector (``"learned"``: the
    same cue is looked for in every image). ``W_o`` starts at zero: the head starts as the
    identity on ``f``.
    """

    def __init__(self, dim: int, query: str = "cls", reduction: int = 4, heads: int = 1, ratio: float = 0.2) -> None:
        super().__init__()
        if query not in HEAD_QUERIES:
            raise ValueError(f"head query must be one of {HEAD_QUERIES}, got {query!r}")
        hidden = max(1, dim // reduction)
        if hidden % heads:
            raise ValueError(f"the head width {hidden} (dim {dim} // reduction {reduction}) is not divisible "
                             f"by heads={heads}")
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"the residual ratio must lie in [0, 1], got {ratio}")
        self.query_kind, self.heads, self.ratio = query, heads, float(ratio)
        self.q = nn.Linear(dim, hidden, bias=False)
        self.k = nn.Linear(dim, hidden, bias=False)
        self.v = nn.Linear(dim, hidden, bias=False)
        self.out = nn.Linear(hidden, dim, bias=False)
        nn.init.zeros_(self.out.weight)
        if query == "learned":
            self.query = nn.Parameter(F.normalize(torch.randn(dim), dim=0))

    def attention(self, pooled: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, heads, N)`` attention weights over the patch tokens."""
        f = F.normalize(pooled, dim=-1)
        p = F.normalize(tokens, dim=-1)
        query = f if self.query_kind == "cls" else self.query.to(f.dtype).expand_as(f)
        b, n, _ = p.shape
        h = self.heads
        q = self.q(query).reshape(b, h, 1, -1)
        k = self.k(p).reshape(b, n, h, -1).transpose(1, 2)
        return torch.softmax((q @ k.transpose(-1, -2)).squeeze(2) / math.sqrt(k.shape[-1]), dim=-1)

    def forward(self, pooled: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Adapted, normalised image features ``(B, E)`` from pooled ``(B, E)`` and patch ``(B, N, E)``."""
        f = F.normalize(pooled, dim=-1)
        p = F.normalize(tokens, dim=-1)
        b, n, _ = p.shape
        weights = self.attention(pooled, tokens)  # (B, h, N)
        v = self.v(p).reshape(b, n, self.heads, -1).transpose(1, 2)  # (B, h, N, d)
        agg = (weights.unsqueeze(-1) * v).sum(dim=2).reshape(b, -1)
        return F.normalize((1.0 - self.ratio) * f + self.ratio * self.out(agg), dim=-1)


@register_learner("kapt")
class KAPT(PromptLearner):
    """Knowledge-aware prompt tuning (reimplemented from the paper's abstract; see the module docstring).

    Args:
        backbone: the frozen CLIP (or its build arguments).
        class_names: class names, in label order.
        knowledge: the description source: a file path, ``dict(file=..., field=...)``,
            ``dict(dataset=<name>)`` (the dataset's default source, e.g. a toy dataset's
            ``knowledge.json``) or ``dict(descriptions={class: text})``; ``None``: no discrete
            prompt (the ablation).
        extract: how a description becomes the discrete prompt: ``"tfidf"``, ``"clause"``,
            ``"sentence"`` or ``"full"``.
        n_keywords: key words per class for ``"tfidf"``.
        knowledge_template: the text around the class name and its key information; a class
            without a description gets ``"{class}."``.
        on_missing: ``"warn"`` (default), ``"error"`` or ``"ignore"`` when classes have no description.
        n_ctx, ctx_init: the continuous prompt (CoOp's: 4 vectors from "a photo of a").
        visual_head: use the adaptation head (``False``: the ablation without it).
        head_query, head_reduction, head_heads, ratio: the head (:class:`AttentionPoolingHead`).
        w_text: weight of ``loss_kc`` (knowledge consistency of the class features).
        branches: ``"joint"``: one prompt holds the context, the class name and the key information;
            ``"two"``: the continuous prompt ``[V] {class}.`` and the knowledge prompt ``[V] {class},
            {key information}.`` (sharing the context) are encoded apart and their features mixed,
            ``normalize((1 - knowledge_weight) * t_plain + knowledge_weight * t_knowledge)``.
        knowledge_weight: the knowledge branch's share with ``branches="two"``.
        kc_target: the frozen features ``loss_kc`` pulls towards: ``"knowledge"`` (the hand-written
            knowledge prompt), ``"template"`` (``"{ctx_init} {class}."``, KgCoOp's) or ``"both"``
            (the normalised mean of the two).
        w_image: weight of ``loss_vc`` (consistency of the adapted with the frozen image feature).
        knowledge_text: the descriptions' text, ``{class: [sentences]}``, as a checkpoint records it
            (:meth:`hparams` writes it); when given, ``knowledge`` is only the record of where it came
            from and is never read (:func:`~vlprompt.learners.common.description_source`).

    ``n_ctx`` is what was built: with ``ctx_init`` the phrase's tokens (at most ``n_ctx`` of them) are
    the context, and that number is recorded.
    """

    def __init__(
        self,
        backbone: PromptableCLIP | dict,
        class_names: Sequence[str],
        knowledge: str | dict | None = None,
        extract: str = "tfidf",
        n_keywords: int = 8,
        knowledge_template: str = "{class}, {knowledge}.",
        on_missing: str = "warn",
        n_ctx: int = 4,
        ctx_init: str | None = "a photo of a",
        visual_head: bool = True,
        head_query: str = "cls",
        head_reduction: int = 4,
        head_heads: int = 1,
        ratio: float = 0.2,
        w_text: float = 8.0,
        w_image: float = 0.0,
        kc_target: str = "both",
        branches: str = "two",
        knowledge_weight: float = 0.5,
        knowledge_text: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(backbone, class_names)
        if extract not in EXTRACTIONS:
            raise ValueError(f"extract must be one of {EXTRACTIONS}, got {extract!r}")
        if "{class}" not in knowledge_template or "{knowledge}" not in knowledge_template:
            raise ValueError(f"knowledge_template must contain {{class}} and {{knowledge}}, got {knowledge_template!r}")
        if branches not in BRANCHES:
            raise ValueError(f"branches must be one of {BRANCHES}, got {branches!r}")
        if kc_target not in KC_TARGETS:
            raise ValueError(f"kc_target must be one of {KC_TARGETS}, got {kc_target!r}")
        if on_missing not in ("warn", "error", "ignore"):
            raise ValueError(f"on_missing must be warn, error or ignore, got {on_missing!r}")
        self.knowledge = knowledge
        self.descriptions: Descriptions | None
        self.descriptions, self.knowledge_text = description_source(knowledge, knowledge_text, "knowledge")
        self.extract, self.n_keywords = extract, int(n_keywords)
        self.knowledge_template, self.on_missing = knowledge_template, on_missing
        ctx, _ = init_context(self.backbone, n_ctx, ctx_init, who=self.learner_name)
        self.ctx = nn.Parameter(ctx.to(self.device))
        self.n_ctx = self.prompt_length = ctx.shape[0]
        self.ctx_init = ctx_init
        self.head = None
        if visual_head:
            self.require_vit("the visual adaptation head pools patch tokens")
            self.head = AttentionPoolingHead(self.backbone.embed_dim, head_query, head_reduction, head_heads,
                                             ratio).to(self.device)
        self.w_text, self.w_image, self.kc_target = float(w_text), float(w_image), kc_target
        self.branches, self.knowledge_weight = branches, float(knowledge_weight)
        self._hparams = dict(knowledge=knowledge, extract=extract, n_keywords=n_keywords,
                             knowledge_template=knowledge_template, on_missing=on_missing, n_ctx=self.n_ctx,
                             ctx_init=ctx_init, visual_head=visual_head, head_query=head_query,
                             head_reduction=head_reduction, head_heads=head_heads, ratio=ratio, w_text=w_text,
                             w_image=w_image, kc_target=kc_target,
                             branches=branches, knowledge_weight=knowledge_weight)
        if self.knowledge_text is not None:  # the text the prompts were trained with, never a path to read
            self._hparams["knowledge_text"] = self.knowledge_text
        #: the discrete prompt text of each current class ("" when it has none)
        self.class_knowledge: dict[str, str] = {}
        #: classes whose key information was cut to fit the context: name -> the text kept
        self.cut: dict[str, str] = {}
        counts = self.parameter_counts()
        print_log(f"KAPT: {counts['context']} context and {counts['head']} head parameters "
                  f"({sum(counts.values())} learned)", logger="current")
        self.finish_init()

    # ------------------------------------------------------------------ discrete prompt
    def parameter_counts(self) -> dict[str, int]:
        """Learned parameters of the continuous prompt and of the visual head."""
        head = sum(p.numel() for p in self.head.parameters()) if self.head is not None else 0
        return {"context": self.ctx.numel(), "head": head}

    def key_information(self, class_names: Sequence[str]) -> dict[str, str]:
        """The discrete prompt text of each class (before fitting it to the context)."""
        if self.descriptions is None:
            return {n: "" for n in class_names}
        check_coverage(self.descriptions, class_names, f"{type(self).__name__}'s classes", self.on_missing)
        found = self.descriptions.for_classes(class_names)
        if self.extract == "tfidf":
            words = key_words({n: s for n, s in found.items() if s}, self.n_keywords)
            return {n: " ".join(words.get(n, [])) for n in class_names}
        out = {}
        for name, sentences in found.items():
            if not sentences:
                out[name] = ""
            elif self.extract == "clause":
                out[name] = leading_clause(sentences[0])
            elif self.extract == "sentence":
                out[name] = split_sentences(sentences[0])[0]
            else:
                out[name] = " ".join(sentences)
        return out

    def prompt_text(self, name: str, knowledge: str) -> str:
        """The class prompt's words (the context vectors go in front of them)."""
        name = prompt_class_name(name)
        knowledge = knowledge.strip().rstrip(".")
        if not knowledge:
            return f"{name}."
        return self.knowledge_template.replace("{class}", name).replace("{knowledge}", knowledge)

    def _phrase(self) -> str:
        return (self.ctx_init or "a photo of a").replace("_", " ")

    def set_classes(self, class_names: Sequence[str]) -> None:
        """Switch classes: their discrete prompts come from the description source, fitted to the context."""
        names = list(class_names)
        if not names:
            raise ValueError("a learner needs at least one class name")
        wanted = self.key_information(names)
        # room for the learned context and for the phrase of the frozen knowledge prompt
        reserve = max(self.n_ctx, len(self.backbone.tokenizer.encode(self._phrase())) + 1)
        fitted, cut = {}, {}
        for name in names:
            text = wanted[name]
            kept = fit_to_context(self.backbone, lambda k, n=name: self.prompt_text(n, k), text, reserve)
            if kept != text:
                cut[name] = kept
            fitted[name] = kept
        if cut:
            first = next(iter(cut))
            print_log(f"KAPT: the key information of {len(cut)} of {len(names)} classes was cut at a word boundary "
                      f"to fit the {self.backbone.context_length}-token context; first {first!r}, kept "
                      f"{cut[first]!r}", logger="current")
        self.class_knowledge, self.cut = fitted, cut
        super().set_classes(names)
        if self.branches == "two":  # the continuous prompt's own branch: "[V]_1..[V]_M {class}."
            plain = self.backbone.tokenize([f"{prompt_class_name(n)}." for n in names], reserve=self.n_ctx)
            self.register_buffer("plain_token_ids", plain.to(self.device), persistent=False)
        if self.w_text > 0:
            phrase = self._phrase()
            texts = {"knowledge": [f"{phrase} {self.prompt_text(n, fitted[n])}" for n in names],
                     "template": [f"{phrase} {prompt_class_name(n)}." for n in names]}
            kinds = ("knowledge", "template") if self.kc_target == "both" else (self.kc_target,)
            with torch.no_grad():
                feats = [self.backbone.encode_text(self.backbone.tokenize(texts[k]), normalize=True) for k in kinds]
            self.register_buffer("knowledge_features", F.normalize(sum(feats), dim=-1), persistent=False)

    def tokenize_classes(self, class_names: Sequence[str]) -> torch.Tensor:
        """``{class}, {key information}.`` ids, with the context slots reserved."""
        texts = [self.prompt_text(n, self.class_knowledge.get(n, "")) for n in class_names]
        return self.backbone.tokenize(texts, reserve=self.n_ctx)

    # ------------------------------------------------------------------ features
    def encode_classes(self, image_features: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        if not normalize:
            raise ValueError("KAPT's class features mix two normalised branches; it has no raw ones")
        prompts = TextPrompts(insert=[TokenInsertion(self.ctx, 1)])
        joint = self.backbone.encode_text(self.class_token_ids, prompts, normalize=True)
        if self.branches == "joint":
            return joint
        plain = self.backbone.encode_text(self.plain_token_ids, prompts, normalize=True)
        return F.normalize((1.0 - self.knowledge_weight) * plain + self.knowledge_weight * joint, dim=-1)

    def _image_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(adapted, frozen) normalised image features; the frozen tower runs without autograd."""
        with torch.no_grad():
            if self.head is None:
                frozen = self.backbone.encode_image(images, normalize=True)
                return frozen, frozen
            pooled, tokens = self.backbone.encode_image(images, return_tokens=True)
        return self.head(pooled, tokens), F.normalize(pooled, dim=-1)

    def encode_images(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        if not normalize:
            raise ValueError("KAPT's image features are normalised before its adapter; it has no raw ones")
        return self._image_features(images)[0]

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss_ce``, plus ``loss_kc`` (``w_text > 0``) and ``loss_vc`` (``w_image > 0``)."""
        image_features, frozen = self._image_features(images)
        class_features = self.encode_classes(image_features)
        logits = self.logits(image_features, class_features.to(image_features.dtype))
        losses = {"loss_ce": F.cross_entropy(logits, labels)}
        if self.w_text > 0:
            target = self.knowledge_features.to(class_features.dtype)
            losses["loss_kc"] = self.w_text * (1.0 - F.cosine_similarity(class_features, target, dim=-1).mean())
        if self.w_image > 0 and self.head is not None:
            losses["loss_vc"] = self.w_image * (1.0 - F.cosine_similarity(image_features, frozen, dim=-1).mean())
        return losses

    def hparams(self) -> dict[str, Any]:
        return dict(self._hparams)

    @classmethod
    def settings_as_built(cls, settings: Mapping[str, Any]) -> dict[str, Any]:  # noqa: D102 - a phrase sizes n_ctx
        return phrase_sized_settings(cls, settings)
