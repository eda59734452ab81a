# PromptKD from a teacher the student's own size: PromptSRC trained on the same backbone (the toy world's tiny
# CLIP, or ViT-B/16), read from its default work dir. Not a published setting: it separates what distillation on
# unlabelled images gives from what a larger teacher gives. Train the teacher first:
#   python tools/train.py --method promptsrc --dataset <dataset>      # -> work_dirs/promptsrc/<dataset>/
from mmengine.config import read_base

with read_base():
    from .._method import *

recipe["toy"] = dict(train_cfg=dict(max_epochs=5))
model.learner.teacher = "work_dirs/promptsrc/<dataset.leaf>/learned.safetensors"
recipe["cross_dataset"]["model"]["learner"]["teacher"] = "work_dirs/promptsrc/imagenet_xd/learned.safetensors"
recipe["toy+cross_dataset"]["model"]["learner"]["teacher"] = "work_dirs/promptsrc/<dataset.leaf>_xd/learned.safetensors"
