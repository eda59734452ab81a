# RLCF (Zhao et al., ICLR 2024), prompt variant (rlcf-prompt.sh): per sample, 3 AdamW steps (lr 7e-3, weight
# decay 5e-4) on the 4 context tokens with REINFORCE on each confident view's top-3 classes, rewarded by a
# frozen CLIP ViT-L/14 teacher's CLIPScore. "a photo of a" by default; --checkpoint gives "RLCF + CoOp".
# The image-encoder variant: --cfg-options adapter.variant=image adapter.lr=1e-05.
from mmengine.config import read_base

with read_base():
    from .._base_.tta import *
    from .._base_.models.clip_vit_b16 import *

# the zero-shot prompt that is adapted (without --checkpoint): TPT's 4 context tokens from "a photo of a"
model = dict(backbone=backbone, learner=dict(type="coop", n_ctx=4, ctx_init="a photo of a"))
adapter = dict(type="rlcf", variant="prompt", steps=3, lr=7e-3, weight_decay=5e-4, selection_p=0.1, sample_k=3,
               teacher=dict(name="ViT-L-14", pretrained="openai"), episodic=True)
recipe = dict(
    fine_grained=dict(adapter=dict(steps=5)),  # RLCF's fine-grained recipe (rlcf-prompt-fine.sh): 5 steps
    toy=dict(views=dict(n_views=32), adapter=dict(teacher=dict(name="toy", pretrained="toy-teacher"))),
)
