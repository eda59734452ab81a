"""MVLPT: the three prompt families (:mod:`.learners`: MCoOp, MVPT, MUPT, registered as ``"mcoop"``,
``"mvpt"``, ``"mupt"``) and the multitask model that trains one on many tasks (:mod:`.model`:
``MultitaskModel``, its data preprocessor and the per-task metric; mmengine classes that configs import
from ``vlprompt.learners.mvlpt.model``, not imported here, so the learners need no mmengine). The
multitask data is :mod:`vlprompt.datasets.multitask`.
"""

from .learners import MUPT, MVPT, MCoOp, vpt_uniform_init

__all__ = ["MCoOp", "MUPT", "MVPT", "vpt_uniform_init"]
