# Active prompt learning, PCB's protocol (Bang, Ahn, Lee, CVPR 2024; kaist-dmlab/pcb scripts/alvlm/main.sh and
# configs/trainers/ALVLM/vit_b16.yaml): CoOp with 16 class-specific context vectors (random init), class
# token at the end; SGD lr 0.002, cosine, 1 warm-up epoch at 1e-5, batch 32, 200 epochs, the prompt trained
# from scratch every round. 8 rounds, round 0 random, budget = the number of classes per round; PCB's
# candidates are 10 % of the pool. tools/active.py sets active.sampler / active.pcb per strategy.
from mmengine.config import read_base

from vlprompt.engine import PromptModel

with read_base():
    from .._base_.datasets.active_pool import *
    from .._base_.default_runtime import *
    from .._base_.models.clip_vit_b16 import *
    from .._base_.schedules.sgd_warmup_cosine import *

model = dict(type=PromptModel, backbone=backbone,
             learner=dict(type="coop", n_ctx=16, ctx_init="", class_specific=True, class_token_position="end"))
optim_wrapper.optimizer.lr = 0.002
train_cfg.max_epochs = 200
train_batch_size = 32
active = dict(sampler="random", pcb=False, rounds=8, budget=None, candidate_fraction=0.1,
              candidates_of="pool", exhausted="random")
default_hooks.checkpoint.interval = 10**9  # one round is short: the last checkpoint and learned.safetensors only
train_dataloader.batch_size = train_batch_size
recipe = dict(toy=dict(train_cfg=dict(max_epochs=10)))  # the tiny CLIP on the toy world: a round in seconds
