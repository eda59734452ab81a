"""The bundled toy world as datasets: re-exports the public API of ``vlprompt.toyworld``.

``ensure_toy_dataset(name)`` generates (once, into ``$VLPROMPT_CACHE/toyworld`` or
``~/.cache/vlprompt/toyworld``) and returns ``<root>/<name>`` in the CoOp layout: ``images/``,
``split_<name>.json``, ``classnames.txt``, ``knowledge.json``, ``meta.json``.
"""

from vlprompt.toyworld import *  # noqa: F403
from vlprompt.toyworld import __all__  # noqa: F401
