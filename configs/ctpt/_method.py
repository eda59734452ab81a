# C-TPT (Yoon et al., ICLR 2024; official code hee-suk-yoon/C-TPT): TPT (1 AdamW step, lr 5e-3, the 6 most
# confident of 64 views, the prompt "a photo of a" or --checkpoint's context) whose loss also subtracts
# atfd_weight x the dispersion of the class text features (ATFD). The published weights: 50 on ImageNet and the
# fine-grained sets (scripts/test_tpt_ctpt_fg.sh), 20 on ImageNet-A/-V2/-R/-Sketch, whose runs also take AugMix
# views (test_tpt_ctpt_ds.sh, --I_augmix); ImageNet itself: crops and flips.
from mmengine.config import read_base

with read_base():
    from ..tpt._method import *

adapter = dict(type="ctpt", atfd_weight=50.0, variant="prompt", steps=1, lr=5e-3, weight_decay=0.01,
               selection_p=0.1, episodic=True)
_shifted = dict(adapter=dict(atfd_weight=20.0), views=dict(augmix=True))
recipe = dict(toy=dict(views=dict(n_views=32, crop_scale=(0.25, 1.0))), **{
    "imagenet-a": _shifted, "imagenet-v2": _shifted, "imagenet-r": _shifted, "imagenet-sketch": _shifted})
