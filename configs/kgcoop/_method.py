# KgCoOp, base-to-novel recipe (vit_b16_ep100_ctxv1, W 8.0): CoOp's 4 context vectors from "a photo of
# a" plus the knowledge-guided term towards the frozen hand-crafted prompt; batch 128, lr 0.002,
# 100 epochs. The template is the dataset's (KgCoOp's table: CoOp's but for DTD).
from mmengine.config import read_base

from vlprompt.engine import PromptModel

with read_base():
    from .._base_.datasets.base2novel import *
    from .._base_.default_runtime import *
    from .._base_.models.clip_vit_b16 import *
    from .._base_.schedules.sgd_warmup_cosine import *

model = dict(type=PromptModel, backbone=backbone,
             learner=dict(type="kgcoop", n_ctx=4, ctx_init="a photo of a", w=8.0, template="<dataset.template>"))
optim_wrapper.optimizer.lr = 0.002
train_cfg.max_epochs = 100
train_batch_size = 128
train_dataloader.batch_size = train_batch_size
# KgCoOp's copy of CoOp's templates differs for DTD; its cross-dataset source run uses 4 shots of ImageNet.
recipe = {
    "toy": dict(train_cfg=dict(max_epochs=50)),  # the tiny CLIP on the toy world: minutes on a CPU
    "dtd": dict(model=dict(learner=dict(template="a photo of a {}, a type of texture."))),
    "imagenet+cross_dataset": dict(train_dataloader=dict(dataset=dict(num_shots=4)), protocol=dict(num_shots=4)),
}
