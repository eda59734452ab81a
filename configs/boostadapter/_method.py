# BoostAdapter (Zhang et al., NeurIPS 2024; official code taolinzhang/BoostAdapter, scripts/run.sh --mode
# boostadapter --views 64): TDA (configs/tda: the same caches, per-dataset alpha and beta, prompts) whose positive
# cache is read with the sample's 6 most confident of 64 views added (delta more slots a class, per dataset,
# from the official configs/*.yaml), never kept; its negative cache is first in, first out. Views: the original and
# 63 random crops with flips (no AugMix). The query: TDA's on the ImageNet variants, the original view on the
# fine-grained sets. ImageNet: the original view alone, so no boosting (the official imagenet.yaml has no delta).
from mmengine.config import read_base

with read_base():
    from ..tda._method import *

adapter = dict(adapter, type="boostadapter", delta=3, query="original")
views = dict(n_views=64, augmix=False, crop_scale=(0.08, 1.0))
_delta = {"imagenet-a": 3, "imagenet-v2": 1, "imagenet-r": 3, "imagenet-sketch": 1, "caltech101": 2, "dtd": 0,
          "eurosat": 0, "fgvc-aircraft": 2, "food101": 3, "oxford-flowers": 0, "oxford-pets": 0, "stanford-cars": 3,
          "sun397": 1, "ucf101": 0}
recipe = {name: dict(entry, adapter=dict(entry.get("adapter", {}), delta=_delta.get(name, 0)), views=dict(n_views=64))
          for name, entry in recipe.items()}
recipe["imagenet_family"] = dict(adapter=dict(query="confident"))
recipe["imagenet"]["views"] = dict(n_views=1)
recipe["toy"] = dict(views=dict(n_views=32, crop_scale=(0.25, 1.0)))
