"""CLIP's BPE tokenizer with a cache and a clear error for text that does not fit the context."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from open_clip.tokenizer import SimpleTokenizer

from ..errors import UserError


class ContextOverflowError(UserError, ValueError):
    """A text is too long for the text tower's context."""


class PromptTokenizer:
    """Tokenizes texts once per distinct list and remembers the result.

    Class names change rarely (base classes while training, novel classes at test), so a small
    LRU cache keyed by the text list makes repeated tokenization free.
    """

    def __init__(self, context_length: int = 77, cache_size: int = 32) -> None:
        self.context_length = context_length
        self._bpe = SimpleTokenizer(context_length=context_length)
        self.sot_token_id = self._bpe.sot_token_id
        self.eot_token_id = self._bpe.eot_token_id
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without start/end tokens."""
        return self._bpe.encode(text)

    def __call__(self, texts: Sequence[str] | str, reserve: int = 0) -> torch.Tensor:
        """``(len(texts), context_length)`` token ids.

        Args:
            texts: the texts.
            reserve: context slots kept free for prompt tokens the model inserts later; a text
                that leaves fewer free slots is an error that names it.
        """
        if isinstance(texts, str):
            texts = [texts]
        key = (tuple(texts), reserve)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        ids = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            tokens = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(tokens) + reserve > self.context_length:
                extra = f" plus {reserve} prompt tokens" if reserve else ""
                raise ContextOverflowError(
                    f"text {text!r} needs {len(tokens)} tokens{extra}, more than the "
                    f"{self.context_length}-token context of the text tower; shorten it"
                )
            ids[i, : len(tokens)] = torch.tensor(tokens)
        self._cache[key] = ids
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return ids
