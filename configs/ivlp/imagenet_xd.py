# IVLP, cross-dataset and domain-generalization source run: ImageNet, all 1000 classes, 16 shots, as the only
# published IVLP cross-dataset script (muzairkhattak/multimodal-prompt-learning,
# scripts/independent-vlp/xd_train_ivlp.sh with configs/trainers/IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml):
# 2 text tokens from "a photo of a" + 2 image tokens, prompt depth 12 / 12, batch 4, SGD lr 0.0035, 5 epochs.
# (configs/ivlp/_method.py is the PromptSRC repository's base-to-novel IVLP, 4 + 4 tokens, depth 9.) Test the
# learned prompts on the targets with tools/test.py.
from mmengine.config import read_base

with read_base():
    from .._base_.datasets.imagenet import *
    from ._method import *

train_dataloader.batch_size = train_batch_size
train_dataloader.dataset.subsample = "all"
test_dataloader.dataset.subsample = "all"
protocol = dict(name="cross-dataset", num_shots=16)
model.learner.n_ctx_text = 2
model.learner.n_ctx_vision = 2
model.learner.text_depth = 12
model.learner.vision_depth = 12
optim_wrapper.optimizer.lr = 0.0035
train_cfg.max_epochs = 5
