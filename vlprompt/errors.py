"""The errors that mean "the input is wrong", not "vlprompt is broken".

Every error vlprompt raises for a user's mistake (a missing file, a bad checkpoint, a broken
dataset tree, an unknown name or option) derives from :class:`UserError` as well as from the
builtin exception it has always been (``ValueError``, ``KeyError``...), so library callers keep
catching what they caught, and the command-line tools print such errors as one line while any
other exception, a bug, keeps its traceback. This module imports nothing heavy: the tools load it
before torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """Base of the expected errors: its message names the file, key or value at fault."""


class ConfigError(UserError, ValueError):
    """A config file or a ``--cfg-options`` value that cannot be used."""


class ConfigNotFoundError(ConfigError, FileNotFoundError):
    """The config path does not exist."""


INTERRUPT_HINT = "vlprompt_hint"
"""The attribute of a ``KeyboardInterrupt`` that says what to do next (set by :func:`hint_on_interrupt`)."""


@contextmanager
def hint_on_interrupt(hint: str) -> Iterator[None]:
    """Attach ``hint`` (what to do next, e.g. how to resume) to a Ctrl-C inside the block; an inner
    block's hint wins. The tools print it after ``interrupted`` (:func:`vlprompt.cli.run_tool`)."""
    try:
        yield
    except KeyboardInterrupt as err:
        if not getattr(err, INTERRUPT_HINT, None):
            setattr(err, INTERRUPT_HINT, hint)
        raise
