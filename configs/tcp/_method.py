# TCP, base-to-novel recipe (htyao89/Textual-based_Class-aware_prompt_tuning, vit_b16_ep100_ctxv1 with
# scripts/base2new_train.sh): 4 random context vectors, class-aware tokens at text layer 8 of 12 (3 of the toy
# CLIP's 4), KgCoOp's term with w 8; Adam lr 0.002 with eps 1e-3 (the published runs' patched Dassl) and coupled
# weight decay 5e-4, Dassl's warm-up cosine, batch 32, 50 epochs (25 for ImageNet and SUN397). The frozen
# template and the learnable prompt's suffix are the official code's per dataset (docs/methods/tcp.md). The
# repository has no few-shot or cross-dataset recipe: the overlays apply this one.
from mmengine.config import read_base
from torch.optim import Adam

from vlprompt.engine import PromptModel

with read_base():
    from .._base_.datasets.base2novel import *
    from .._base_.default_runtime import *
    from .._base_.models.clip_vit_b16 import *
    from .._base_.schedules.sgd_warmup_cosine import *

model = dict(type=PromptModel, backbone=backbone,
             learner=dict(type="tcp", n_ctx=4, ctx_init="", w=8.0, template="<dataset.template>",
                          prompt_template="{}.", layer=None))  # None: 8 of 12 layers
optim_wrapper.optimizer = dict(type=Adam, lr=0.002, betas=(0.9, 0.999), eps=1e-3, weight_decay=5e-4)
train_cfg.max_epochs = 50
train_batch_size = 32
train_dataloader.batch_size = train_batch_size


def _prompts(template: str | None = None, suffix: str | None = None) -> dict:
    learner = {k: v for k, v in (("template", template), ("prompt_template", suffix)) if v is not None}
    return dict(model=dict(learner=learner))


recipe = {
    "imagenet": dict(train_cfg=dict(max_epochs=25)),
    "sun397": dict(train_cfg=dict(max_epochs=25)),
    "oxford-pets": _prompts(suffix="{}, a type of pet."),
    "oxford-flowers": _prompts(suffix="{}, a type of flower."),
    "fgvc-aircraft": _prompts("a photo of an aircraft {}.", "{}, a type of aircraft."),
    "dtd": _prompts("a photo of a {}, a type of texture.", "{} texture."),
    "stanford-cars": _prompts(suffix="{}, a type of car"),
    "food101": _prompts("a photo of a {}, a type of food.", "{}, a type of food."),
    "ucf101": _prompts(suffix="person doing {}."),
}
