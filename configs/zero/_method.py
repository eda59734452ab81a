# ZERO (Farina et al., NeurIPS 2024; official code FarinaMatteo/zero): no optimisation. Per sample, the 30% of
# the 64 views with the lowest entropy (int(64 x 0.3) = 19) each vote for their top class at zero temperature;
# the most voted class wins (a tie goes to the tied class the most confident dropped view predicts). The views
# are random resized crops and flips on every dataset (no AugMix, unlike TPT), and the prompt "a photo of a"
# (or --checkpoint's trained learner). The scores are the vote shares (their softmax): what ECE is measured on.
from mmengine.config import read_base

with read_base():
    from .._base_.tta import *
    from .._base_.models.clip_vit_b16 import *

model = dict(backbone=backbone, learner=dict(type="coop", n_ctx=4, ctx_init="a photo of a"))
adapter = dict(type="zero", selection_p=0.3)
views = dict(n_views=64, augmix=False, crop_scale=(0.08, 1.0))
recipe = dict(toy=dict(views=dict(n_views=32, crop_scale=(0.25, 1.0))))  # the toy world: 32 views, larger crops
