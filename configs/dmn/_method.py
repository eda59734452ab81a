# DMN-ZS (Zhang et al., CVPR 2024; official code YBZh/DMN, the zero-shot runs of scripts/run.sh): no training. A
# dynamic memory of 50 test features a class, written with the pseudo-label of the 3 most confident of 32 views
# before it is read with the original view (sharpness beta 5.5); the prediction is CLIP's probabilities +
# fusion x the memory's. The official code searches `fusion` on the test labels; the values its logs report
# (camera_ready_dmn_tf_*, ViT-B/16) are the recipe entries below, fixed. Views: random crops of scale (0.5, 1) and
# flips, AugMix outside the ImageNet family (TPT's rule). The prompts: the official runs average handcrafted
# templates and CuPL sentences; vlprompt uses the 7 selected ImageNet templates on the ImageNet family and the
# dataset's CoOp template elsewhere (CuPL's sentences are not shipped). The stream: a shuffle seeded by stream.seed.
from mmengine.config import read_base

with read_base():
    from .._base_.tta import *
    from .._base_.models.clip_vit_b16 import *

model = dict(backbone=backbone, learner=dict(type="zsclip", templates="<dataset.template>"))
adapter = dict(type="dmn", memory_size=50, beta=5.5, fusion=1.0, selection_p=0.1)
views = dict(n_views=32, augmix=None, crop_scale=(0.5, 1.0))


def _fusion(weight):
    return dict(adapter=dict(fusion=weight))


recipe = {
    "imagenet_family": dict(model=dict(learner=dict(templates="imagenet-select"))),
    "imagenet": _fusion(1.0), "imagenet-a": _fusion(3.0), "imagenet-v2": _fusion(1.0), "imagenet-r": _fusion(0.3),
    "imagenet-sketch": _fusion(1.0), "oxford-flowers": _fusion(10.0), "dtd": _fusion(10.0),
    "oxford-pets": _fusion(1.0), "stanford-cars": _fusion(0.3), "ucf101": _fusion(0.3), "caltech101": _fusion(0.3),
    "food101": _fusion(0.3), "sun397": _fusion(3.0), "fgvc-aircraft": _fusion(1.0), "eurosat": _fusion(0.3),
}
