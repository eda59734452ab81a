# PromptKD, base-to-novel recipe (zhengli97/PromptKD, vit_b16_c2_ep20_batch8_4+4ctx with
# scripts/promptkd/base2new_train.sh): a ViT-B/16 student (4 visual prompts, depth 9, a projector into the
# teacher's space) distilled from PromptSRC on ViT-L/14 (train it first: configs/promptsrc/vit_l14) on the
# unlabelled training images of ALL classes (the full train split: transductive); T 1, KD weight 1000 (200 for
# FGVC-Aircraft, Flowers and DTD, as the script's comments say); SGD lr 0.005, batch 8, 20 epochs, Dassl's
# warm-up cosine. The student is tested on the base and the novel classes with the teacher's text features.
# The official trainer reports the epoch with the best base-test accuracy; vlprompt reports the last epoch.
# The toy world's teacher is the zero-shot toy-teacher CLIP (no teacher run needed).
from mmengine.config import read_base

from vlprompt.engine import PromptModel

with read_base():
    from .._base_.datasets.base2novel import *
    from .._base_.default_runtime import *
    from .._base_.models.clip_vit_b16 import *
    from .._base_.schedules.sgd_warmup_cosine import *

model = dict(type=PromptModel, backbone=backbone,
             learner=dict(type="promptkd", teacher="work_dirs/promptsrc/vit_l14/<dataset.leaf>/learned.safetensors",
                          n_ctx=4, depth=9, kd_weight=1000.0, temperature=1.0))
optim_wrapper.optimizer.lr = 0.005
train_cfg.max_epochs = 20
train_batch_size = 8
train_dataloader.batch_size = train_batch_size
train_dataloader.dataset.update(subsample="all", num_shots=None)  # every training image, labels unused
recipe = {
    "toy": dict(model=dict(learner=dict(teacher=dict(_delete_=True, name="toy", pretrained="toy-teacher"))),
                train_cfg=dict(max_epochs=5)),  # the tiny CLIPs on the toy world: minutes on a CPU
    **{name: dict(model=dict(learner=dict(kd_weight=200.0))) for name in ("fgvc-aircraft", "oxford-flowers", "dtd")},
    # the target's own unlabelled images, the ImageNet-trained teacher, depth 3 (vit_b16_..._cross_datasets)
    "cross_dataset": dict(model=dict(learner=dict(
        depth=3, teacher="work_dirs/promptsrc/vit_l14/imagenet_xd/learned.safetensors")),
        train_dataloader=dict(dataset=dict(num_shots=None))),
    "toy+cross_dataset": dict(model=dict(learner=dict(teacher=dict(_delete_=True, name="toy",
                                                                   pretrained="toy-teacher")))),
}
