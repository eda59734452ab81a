"""vlprompt: prompt learning for CLIP-style vision-language models.

The library side: ``vlprompt.backbones`` (promptable CLIP towers), ``vlprompt.datasets``
(benchmark readers, protocol, the generated toy world), ``vlprompt.learners`` and the zero-shot
API below. Attributes are imported on first use, so ``import vlprompt`` (and every loader worker
that imports a submodule) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "build_clip": "vlprompt.backbones",
    "list_clips": "vlprompt.backbones",
    "PromptedClassifier": "vlprompt.zeroshot",
    "ZeroShotClassifier": "vlprompt.zeroshot",
    "load_prompted_clip": "vlprompt.zeroshot",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vlprompt' has no attribute {name!r}")
