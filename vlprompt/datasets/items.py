"""What a dataset reader yields and raises: :class:`Datum` records, :class:`DatasetError`, :class:`FewShotWarning`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

__all__ = ['DatasetError', 'Datum', 'FewShotWarning']


@dataclass(frozen=True, slots=True)
class Datum:
    """One image of a split: absolute path, label (index into ``classnames``), class name, domain."""

    impath: str
    label: int
    classname: str
    domain: int = 0


class DatasetError(UserError, ValueError):
    """A dataset on disk is missing, incomplete or inconsistent.

    Raised when a dataset is built, so a run stops before its first step. ``dataset`` is the
    registry name, ``path`` the file or folder at fault, ``hint`` where to get it.
    """

    def __init__(self, dataset: str, message: str = '', path: str | os.PathLike[str] | None = None,
                 hint: str | None = None) -> None:
        self.dataset = dataset
        self.message = message
        self.path = None if path is None else str(path)
        self.hint = hint
        text = f'[{dataset}] {message}' if message else dataset
        if self.path is not None:
            text += f': {self.path}'
        if hint:
            text += f'\n  -> {hint}'
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.dataset, self.message, self.path, self.hint)


class FewShotWarning(UserWarning):
    """Some classes have fewer training images than ``num_shots``: they are trained on all they have."""
