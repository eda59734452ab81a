# MTA (Zanella & Ben Ayed, CVPR 2024; official code MaxZanella/MTA): no prompt optimisation. Per sample, the mode
# of the 64 views' image features found by a mean shift whose views are weighted by their inlierness (kernel
# density plus lambda_q x agreement of their predictions, entropy lambda_y), started at the original view; the
# mode is classified with the prompt "a photo of a" (or --checkpoint's trained learner). Random resized crops and
# flips on every dataset (no AugMix); the published lambda_y 0.2 and lambda_q 4 for every dataset.
from mmengine.config import read_base

with read_base():
    from .._base_.tta import *
    from .._base_.models.clip_vit_b16 import *

model = dict(backbone=backbone, learner=dict(type="coop", n_ctx=4, ctx_init="a photo of a"))
adapter = dict(type="mta", lambda_y=0.2, lambda_q=4.0)
views = dict(n_views=64, augmix=False, crop_scale=(0.08, 1.0))
recipe = dict(toy=dict(views=dict(n_views=32, crop_scale=(0.25, 1.0))))  # the toy world: 32 views, larger crops
