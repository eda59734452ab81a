"""Zero-shot day-night adaptation by Similarity Min-Max (SMM, Luo et al., ICCV 2023) on CLIP.

No night image is seen. Stage 1 (:mod:`.darkening`) trains a darkening module that makes day
images as unlike the frozen CLIP's day features as it can; stage 2 (:mod:`.smm`) trains any prompt
learner with the cross-entropy of day images and their darkened versions plus a BYOL-style term
that makes the two alike. ``python tools/train.py configs/smm/toy_shapes.py`` runs both
(:mod:`vlprompt.daynight.hooks` is the Runner glue: :class:`DayNightModel`, :class:`DarkeningHook`,
:class:`DayNightReportHook`, which configs import from here); the checkpoint holds only the learner's
parameters, so ``tools/test.py`` and :func:`vlprompt.load_prompted_clip` serve it unchanged.
"""

from .darkening import (
    DARKENING_ARCH,
    DarkeningLoss,
    DarkeningNet,
    DarkeningSettings,
    check_exposure_range,
    colour_constancy_loss,
    exposure_loss,
    feature_similarity,
    flexibility_loss,
    load_darkening,
    loose_tv_loss,
    read_darkening_meta,
    save_darkening,
    train_darkening,
)
from .hooks import (
    DARKENING_FILE,
    DEFAULT_DARKENING,
    DarkeningHook,
    DayNightModel,
    DayNightReportHook,
    is_night_split,
)
from .smm import (
    REPRESENTATIONS,
    NightViewSettings,
    ProjectionHead,
    SimilarityMax,
    byol_pair_loss,
    colour_jitter,
    darkening_grid,
    learner_prompts_images,
    mean_pair_cosine,
    mmd_rbf,
    night_exposure,
    night_view,
    save_png,
)

__all__ = [
    "DARKENING_ARCH", "DARKENING_FILE", "DEFAULT_DARKENING", "DarkeningHook", "DayNightModel", "DayNightReportHook",
    "is_night_split", "REPRESENTATIONS", "DarkeningLoss", "DarkeningNet", "DarkeningSettings", "NightViewSettings",
    "ProjectionHead", "SimilarityMax", "byol_pair_loss", "check_exposure_range", "colour_constancy_loss",
    "colour_jitter", "darkening_grid", "exposure_loss", "feature_similarity", "flexibility_loss",
    "learner_prompts_images", "load_darkening", "loose_tv_loss", "mean_pair_cosine", "mmd_rbf", "night_exposure",
    "night_view", "read_darkening_meta", "save_darkening", "save_png", "train_darkening",
]
