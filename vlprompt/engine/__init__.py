"""The mmengine glue: one model wrapper for every learner, hooks, metrics, the LR schedule.

Importing this package registers the hooks, metrics and schedulers with mmengine, joins vlprompt's
registries to mmengine's (:func:`vlprompt.registry.use_mmengine`) and installs the compatibility
fixes (:mod:`vlprompt.engine.compat`).
"""

from ..registry import use_mmengine
from . import compat
from .config import load_config
from .hooks import LEARNED_FILE, NaNGuardHook, PromptCheckpointHook
from .metrics import AccuracyMetric, expected_calibration_error
from .model import PromptDataPreprocessor, PromptModel
from .runner import ClassSetHook, build_runner, evaluate
from .schedulers import WarmupCosineLR, dassl_lr

use_mmengine()
compat.apply()

__all__ = [
    "LEARNED_FILE", "AccuracyMetric", "ClassSetHook", "NaNGuardHook", "PromptCheckpointHook", "PromptDataPreprocessor",
    "PromptModel", "WarmupCosineLR", "build_runner", "compat", "dassl_lr", "evaluate", "expected_calibration_error",
    "load_config",
]
