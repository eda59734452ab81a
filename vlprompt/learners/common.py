"""What several learners share: the class-name text, frozen class features, context and deep prompts.

This module sits below every learner file (and below :mod:`vlprompt.zeroshot`, which re-exports
:func:`class_text_features`): it imports only the backbones, the template table and the description
sources.

Sizes are checked before anything is allocated (:func:`check_text_tokens`, :func:`check_image_tokens`):
a config or a checkpoint's metadata asking for ``n_ctx=100000000`` is refused naming the setting and
what the backbone allows, never tried.

Class names are kept as the split files spell them (``american_bulldog``, ``Apply_Eye_Makeup``) in
datasets, checkpoints and results; only the text that is tokenized goes through
:func:`prompt_class_name`, as in every official trainer (CoOp, CoCoOp, KgCoOp, MaPLe, IVLP, VPT,
PromptSRC and CoOp's zero-shot CLIP all write ``name.replace("_", " ")`` before tokenizing).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import ContextOverflowError, PromptableCLIP, PromptTokenizer, TokenInsertion, token_layout
from ..datasets.knowledge import Descriptions, resolve_descriptions
from ..datasets.templates import DEFAULT_TEMPLATE

__all__ = [
    "CLASS_TOKEN_POSITIONS", "DEFAULT_TEMPLATE", "check_image_tokens", "check_text_tokens", "class_text_features",
    "context_insertions", "deep_prompts", "description_source", "fit_to_context", "init_context", "layer_prompts",
    "phrase_class_token_ids", "prompt_set_features", "phrase_context", "prompt_class_name", "prompt_depth",
]


def prompt_class_name(name: str) -> str:
    """The text of a class name in a prompt: underscores become spaces (``sea_lion`` -> ``sea lion``)."""
    if not isinstance(name, str):
        raise TypeError(f"a class name must be a string, got {name!r} ({type(name).__name__})")
    return name.replace("_", " ")


@torch.no_grad()
def class_text_features(
    backbone: PromptableCLIP,
    class_names: Sequence[str],
    templates: str | Sequence[str] = DEFAULT_TEMPLATE,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Normalised ``(C, E)`` class embeddings; a template list is averaged as in CLIP's ensemble.

    Each template's features are normalised, averaged over templates, and normalised again.
    Prompts are encoded in chunks so 1000 classes x 60 templates fit in memory. Class names go
    through :func:`prompt_class_name` first.
    """
    if isinstance(templates, str):
        templates = [templates]
    if not class_names:
        raise ValueError("no class names given")
    texts = [t.format(prompt_class_name(name)) for name in class_names for t in templates]
    try:
        ids = backbone.tokenize(texts)
    except ContextOverflowError as err:
        raise ContextOverflowError(f"a class name is too long for the text tower: {err}") from None
    feats = torch.cat(
        [backbone.encode_text(ids[i : i + chunk_size], normalize=True) for i in range(0, len(ids), chunk_size)]
    )
    feats = feats.reshape(len(class_names), len(templates), -1).mean(dim=1)
    return F.normalize(feats, dim=-1)


@torch.no_grad()
def prompt_set_features(
    backbone: PromptableCLIP, prompts: Sequence[Sequence[str]], chunk_size: int = 1024
) -> torch.Tensor:
    """Normalised ``(C, E)`` features, class ``c``'s the normalised mean over its own prompt texts ``prompts[c]``.

    The ensemble of :func:`class_text_features` for prompts that differ per class (descriptions).
    """
    if not prompts or any(not p for p in prompts):
        raise ValueError("every class needs at least one prompt")
    texts = [t for p in prompts for t in p]
    owner = torch.tensor([c for c, p in enumerate(prompts) for _ in p])
    ids = backbone.tokenize(texts)
    feats = torch.cat(
        [backbone.encode_text(ids[i : i + chunk_size], normalize=True) for i in range(0, len(ids), chunk_size)]
    )
    sums = feats.new_zeros(len(prompts), feats.shape[-1]).index_add_(0, owner.to(feats.device), feats)
    return F.normalize(sums, dim=-1)


def fit_to_context(backbone: PromptableCLIP, render: Callable[[str], str], text: str, reserve: int = 0) -> str:
    """The longest word-boundary prefix of ``text`` for which ``render(prefix)`` fits the text context.

    ``render`` builds the whole prompt around the (possibly cut) text; ``reserve`` context slots
    are kept for learned tokens. A prefix never ends in a cut word, and trailing ``,;:`` are
    dropped. Returns ``text`` itself when it fits, ``""`` when not even one word does.
    """
    room = backbone.context_length - 2 - reserve  # start and end-of-text tokens

    def fits(candidate: str) -> bool:
        return len(backbone.tokenizer.encode(render(candidate))) <= room

    if fits(text):
        return text
    words = text.split()
    lo, hi = 0, len(words)  # words[:lo] fits (or lo == 0), words[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(" ".join(words[:mid]).rstrip(",;:")):
            lo = mid
        else:
            hi = mid
    return " ".join(words[:lo]).rstrip(",;:")


# ------------------------------------------------------------------------------------------ descriptions
def description_source(spec: Any, text: Any, key: str) -> tuple[Descriptions | None, dict[str, list[str]] | None]:
    """A learner's description source and the text it records: ``(source, {class: [sentences]})``.

    ``spec`` is the ``descriptions`` / ``knowledge`` setting (a path, ``dict(file=...)``,
    ``dict(dataset=...)``, ``dict(descriptions=...)``); ``text`` is what a checkpoint recorded of it
    (``<key>_text``). With ``text`` the source is that text and ``spec`` is never read (it is only the
    record of where the text came from): loading a checkpoint reads no file its metadata names. Without
    it the source is read from ``spec``, and its text is what the learner records, so that every file
    vlprompt writes carries the descriptions it was trained with.
    """
    if text is not None:
        source = resolve_descriptions({"descriptions": text})
        source.source = f"the {key} recorded from {spec!r}" if spec is not None else f"the recorded {key}"
    elif spec is not None:
        source = resolve_descriptions(spec)
    else:
        return None, None
    return source, {name: list(sentences) for name, sentences in source.entries.items()}


# ------------------------------------------------------------------------------------------ sizes
def _is_count(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool)


def check_text_tokens(backbone: PromptableCLIP, n: Any, key: str = "n_ctx", who: str = "") -> int:
    """``n`` learned text tokens, refused before anything is allocated unless ``1 <= n <= context - 3``
    (the start and end tokens and at least one word of the class prompt take the rest of the context)."""
    where = f"{who}: " if who else ""
    if not _is_count(n) or n < 1:
        raise ValueError(f"{where}{key} must be a whole number >= 1, got {n!r}")
    limit = backbone.context_length - 3
    if n > limit:
        raise ValueError(f"{where}{key}={n} context vectors do not fit {backbone.arch}'s {backbone.context_length}-"
                         f"token text context (at most {limit}: the start and end tokens and a word of the class "
                         f"prompt take the rest)")
    return n


def check_image_tokens(backbone: PromptableCLIP, n: Any, key: str = "n_ctx", who: str = "") -> int:
    """``n`` image prompt tokens, refused before anything is allocated unless ``1 <= n <=`` the image tower's
    own sequence length (its patches and class token: a prompt at most doubles the sequence)."""
    where = f"{who}: " if who else ""
    if not _is_count(n) or n < 1:
        raise ValueError(f"{where}{key} must be a whole number >= 1, got {n!r}")
    grid = backbone.image_size // (backbone.patch_size or backbone.image_size)
    limit = grid * grid + 1
    if n > limit:
        raise ValueError(f"{where}{key}={n} image prompt tokens are more than the {limit} tokens of {backbone.arch}'s "
                         f"image sequence ({grid}x{grid} patches and the class token); at most {limit}")
    return n


# ------------------------------------------------------------------------------------------ context
def init_context(
    backbone: PromptableCLIP, n_ctx: int, ctx_init: str | None, std: float = 0.02, width: int | None = None,
    key: str = "n_ctx", who: str = "",
) -> tuple[torch.Tensor, int]:
    """Context vectors ``(n, D)`` from the embeddings of ``ctx_init``'s words, or random N(0, std^2).

    With an initial phrase, ``n`` is its number of tokens unless ``n_ctx`` asks for fewer (MaPLe
    keeps the first two of "a photo of a"); the returned int is the number of phrase tokens. ``n``
    is checked against the text context (:func:`check_text_tokens`, naming ``key`` and ``who``)
    before anything is allocated; learners record ``n``, what was built, not ``n_ctx``.
    """
    width = width or backbone.text_width
    if not ctx_init:
        return torch.randn(check_text_tokens(backbone, n_ctx, key, who), width) * std, 0
    if not _is_count(n_ctx) or n_ctx < 0:
        raise ValueError(f"{f'{who}: ' if who else ''}{key} must be a whole number >= 0 (0: the phrase's tokens), "
                         f"got {n_ctx!r}")
    words = backbone.tokenizer.encode(ctx_init.replace("_", " "))
    n = check_text_tokens(backbone, _phrase_count(n_ctx, len(words)), key, who)
    ids = torch.tensor(words[:n], device=backbone.device)
    with torch.no_grad():
        return backbone.embed_tokens(ids).float().cpu(), len(words)


def _phrase_count(n_ctx: int, n_words: int) -> int:
    """How many context vectors a phrase of ``n_words`` tokens starts: all of them unless ``n_ctx`` asks for fewer."""
    return min(n_ctx, n_words) if n_ctx else n_words


@functools.lru_cache(maxsize=1)
def _bpe() -> PromptTokenizer:
    return PromptTokenizer()  # every registered CLIP shares this BPE; only its context length differs


def setting_or_default(cls: type, settings: Mapping[str, Any], key: str) -> Any:
    """``settings[key]``, else the default of ``cls``'s constructor argument ``key`` (``None`` if it has none)."""
    if key in settings:
        return settings[key]
    return getattr(inspect.signature(cls.__init__).parameters.get(key), "default", None)


def phrase_sized_settings(cls: type, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with ``n_ctx`` as :func:`init_context` builds it for ``cls`` (whose constructor defaults fill
    what the settings leave out): a 4-token ``ctx_init`` with ``n_ctx=80`` records 4. Values that are not
    counts are left as they are (building the learner reports them)."""
    built = dict(settings)
    if "n_ctx" not in settings and "ctx_init" not in settings:
        return built
    n_ctx, ctx_init = setting_or_default(cls, settings, "n_ctx"), setting_or_default(cls, settings, "ctx_init")
    if isinstance(ctx_init, str) and ctx_init and _is_count(n_ctx) and n_ctx >= 0:
        built["n_ctx"] = _phrase_count(n_ctx, len(_bpe().encode(ctx_init.replace("_", " "))))
    elif n_ctx is not None:
        built["n_ctx"] = n_ctx
    return built


CLASS_TOKEN_POSITIONS = ("end", "middle", "front")


def context_insertions(class_token_ids: torch.Tensor, ctx: torch.Tensor, position: str) -> list[TokenInsertion]:
    """Where CoOp-style context vectors go in ``[SOS] {class} . [EOS]`` prompts.

    ``end`` (the class name at the end): ``[SOS] ctx {class} .``; ``front``: ``[SOS] {class} ctx .``;
    ``middle``: the first half of the context, the class name, the second half (``n // 2`` before).
    ``class_token_ids`` were tokenized with the context slots reserved.
    """
    if position == "end":
        return [TokenInsertion(ctx, 1)]
    before_period = token_layout(class_token_ids).eot - 1  # the "." after the class name; on the CPU
    if position == "front":
        return [TokenInsertion(ctx, before_period)]
    if position == "middle":
        half = ctx.shape[-2] // 2
        return [TokenInsertion(ctx[..., :half, :], 1), TokenInsertion(ctx[..., half:, :], before_period)]
    raise ValueError(f"class_token_position must be one of {', '.join(CLASS_TOKEN_POSITIONS)}, got {position!r}")


def phrase_context(backbone: PromptableCLIP, n_ctx: int, ctx_init: str | None, key: str = "n_ctx",
                   who: str = "") -> torch.Tensor:
    """``(n_ctx, D)`` context vectors: the first ``n_ctx`` token embeddings of ``ctx_init``, or
    N(0, 0.02^2) without a phrase (``n_ctx`` checked against the text context first)."""
    check_text_tokens(backbone, n_ctx, key, who)
    ctx, n_words = init_context(backbone, n_ctx, ctx_init, key=key, who=who)
    if ctx_init and n_words < n_ctx:
        raise ValueError(
            f"n_ctx={n_ctx} context vectors cannot start from {ctx_init!r}, which has {n_words} tokens; "
            "use a longer phrase or ctx_init='' (random init)"
        )
    return ctx


def phrase_class_token_ids(
    backbone: PromptableCLIP, class_names: Sequence[str], ctx_init: str | None, n_ctx: int
) -> torch.Tensor:
    """Class prompt ids for ``n_ctx`` context vectors initialised from ``ctx_init``.

    The published MaPLe / IVLP / PromptSRC code tokenizes ``"{ctx_init} {class}."`` and replaces
    the first ``n_ctx`` phrase tokens by the learned vectors, so the phrase tokens past ``n_ctx``
    stay in every prompt as fixed words: MaPLe's 2 vectors from "a photo of a" give
    ``[SOS] [V]_1 [V]_2 of a {class} . [EOS]``. These are the ids of that prompt with the learned
    slots removed (the vectors are inserted back at position 1), the tail zero-padded.
    """
    names = [prompt_class_name(name) for name in class_names]
    if not ctx_init:
        return backbone.tokenize([f"{name}." for name in names], reserve=n_ctx)
    phrase = ctx_init.replace("_", " ")
    ids = backbone.tokenize([f"{phrase} {name}." for name in names])
    words = backbone.tokenizer.encode(phrase)[:n_ctx]
    if ids[:, 1 : 1 + n_ctx].ne(torch.tensor(words)).any():  # BPE splits at word boundaries: never
        raise ValueError(f"the phrase {phrase!r} does not tokenize the same in front of the class names")
    return torch.cat([ids[:, :1], ids[:, 1 + n_ctx :], ids.new_zeros(len(ids), n_ctx)], dim=1)


# ------------------------------------------------------------------------------------- deep prompts
def prompt_depth(depth: int, *layers: int | None) -> int:
    """The number of prompted layers: ``depth`` capped at the towers' layer counts.

    A depth beyond the tower only adds prompts that never enter it (the published code creates
    them and leaves them unused); they are not created here.
    """
    if depth < 0:
        raise ValueError(f"prompt depth must be >= 0, got {depth}")
    return min([depth, *(n for n in layers if n is not None)])


def deep_prompts(n_ctx: int, width: int, depth: int, std: float = 0.02) -> nn.ParameterDict:
    """Learned tokens ``(n_ctx, width)`` ~ N(0, std^2) for the layers ``1 .. depth-1``, keyed by layer."""
    return nn.ParameterDict({str(layer): nn.Parameter(torch.randn(n_ctx, width) * std) for layer in range(1, depth)})


def image_prompt_tokens(backbone: PromptableCLIP, n_ctx: int, depth: int,
                        std: float = 0.02) -> tuple[nn.Parameter, nn.ParameterDict, int]:
    """Deep image prompts as IVLP, VPT and PromptKD learn them, on the backbone's device: ``n_ctx`` input tokens and
    new ones at layers ``1 .. depth-1``, all ~ N(0, std^2), with ``depth`` capped at the image tower's layers.
    Returns the input tokens, the per-layer ones and the depth."""
    depth = prompt_depth(depth, backbone.vision_layers)
    width = backbone.vision_width
    tokens = nn.Parameter((torch.randn(n_ctx, width) * std).to(backbone.device))
    return tokens, deep_prompts(n_ctx, width, depth, std).to(backbone.device), depth


def layer_prompts(deep: nn.ParameterDict) -> dict[int, torch.Tensor]:
    """``{layer: tokens}`` for :class:`~vlprompt.backbones.TextPrompts` / ``ImagePrompts``."""
    return {int(layer): tokens for layer, tokens in deep.items()}
