"""PromptSRC: the learner (:mod:`.learner`, registered as ``"promptsrc"``) and its Gaussian prompt
aggregation over epochs (:mod:`.gpa`, an mmengine training hook that configs import from
``vlprompt.learners.promptsrc.gpa``; not imported here, so the learner needs no mmengine).
"""

from .learner import PromptSRC, template_ensemble

__all__ = ["PromptSRC", "template_ensemble"]
