"""vlprompt: prompt learning for CLIP-style vision-language models.

The library side: ``vlprompt.backbones`` (promptable CLIP towers), ``vlprompt.datasets``
(benchmark readers, protocol, the generated toy world) and the zero-shot API below.
"""

from .backbones import build_clip, list_clips
from .zeroshot import PromptedClassifier, ZeroShotClassifier, load_prompted_clip

__version__ = "0.1.0"

__all__ = ["PromptedClassifier", "ZeroShotClassifier", "build_clip", "list_clips", "load_prompted_clip"]
