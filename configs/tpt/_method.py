# TPT (Shu et al., NeurIPS 2022): per sample, one AdamW step (lr 5e-3, PyTorch's weight decay 0.01) on the
# 4 context tokens ("a photo of a", or --checkpoint's learned context), minimising the entropy of the mean
# prediction over the 10% most confident of 64 views; then view 0 is predicted and the prompt reset.
from mmengine.config import read_base

with read_base():
    from .._base_.tta import *
    from .._base_.models.clip_vit_b16 import *

# the zero-shot prompt that is adapted (without --checkpoint): TPT's 4 context tokens from "a photo of a"
model = dict(backbone=backbone, learner=dict(type="coop", n_ctx=4, ctx_init="a photo of a"))
adapter = dict(type="tpt", variant="prompt", steps=1, lr=5e-3, weight_decay=0.01, selection_p=0.1, episodic=True)
# AugMix views on the fine-grained sets, crops and flips only on the ImageNet family (TPT's rule, in the adapter).
recipe = dict(toy=dict(views=dict(n_views=32, crop_scale=(0.25, 1.0))))  # the toy world: 32 views, larger crops
