# KAPT (Kan et al., ICCV 2023), REIMPLEMENTED FROM THE PAPER: no official code exists and only the abstract
# could be read (../shared/research/methods-c.md section 1). The paper's training recipe is unknown, so this
# is CoOp's base-to-novel recipe (KaiyangZhou/CoOp scripts/cocoop/base2new_train.sh with CoOp's
# vit_b16_ctxv1: batch 32, SGD lr 0.002, 200 epochs; ImageNet 50), with CoOp's 4 context vectors from
# "a photo of a".
# Choices taken where the paper is silent, all learner settings:
#   knowledge          the description source: the dataset's `knowledge` fact (ELEVATER's file, relative to the root)
#   extract/n_keywords the key information: the 8 words of highest TF-IDF across the task's classes
#   knowledge_template "{class}, {knowledge}." after the learned context; overflow cut at a word boundary
#   branches           "two": the continuous prompt "[V]x4 {class}." and the knowledge prompt "[V]x4 {class},
#                      {knowledge}." (one shared context) are encoded apart and averaged (knowledge_weight 0.5)
#   visual head        attention pooling over patch tokens, the class token's feature as the query, width
#                      E/4, 1 head, residual ratio 0.2, output projection initialised at zero
#   w_text, kc_target  knowledge-consistency term loss_kc = 8 * (1 - cos) (KgCoOp's weight) towards the
#                      normalised mean of the frozen CLIP features of "a photo of a {class}." and "a photo of
#                      a {class}, {knowledge}."; w_image 0 (no image-side term)
# branches and kc_target were chosen on the toy world's val split (the README's KAPT section); the rest is
# set a priori.
from mmengine.config import read_base

from vlprompt.engine import PromptModel

with read_base():
    from .._base_.datasets.base2novel import *
    from .._base_.default_runtime import *
    from .._base_.models.clip_vit_b16 import *
    from .._base_.schedules.sgd_warmup_cosine import *

model = dict(type=PromptModel, backbone=backbone,
             learner=dict(type="kapt", knowledge="<dataset.knowledge>", extract="tfidf", n_keywords=8,
                          knowledge_template="{class}, {knowledge}.", n_ctx=4, ctx_init="a photo of a",
                          visual_head=True, head_query="cls", head_reduction=4, head_heads=1, ratio=0.2,
                          w_text=8.0, w_image=0.0, kc_target="both", branches="two", knowledge_weight=0.5))
optim_wrapper.optimizer.lr = 0.002
train_cfg.max_epochs = 200
train_batch_size = 32
train_dataloader.batch_size = train_batch_size
recipe = dict(
    imagenet=dict(train_cfg=dict(max_epochs=50)),  # CoOp's ImageNet schedule
    toy=dict(train_cfg=dict(max_epochs=50)),  # the tiny CLIP on the toy world: minutes on a CPU
)
