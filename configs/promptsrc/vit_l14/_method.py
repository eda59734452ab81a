# PromptSRC on ViT-L/14: PromptKD's teacher (zhengli97/PromptKD, configs/trainers/PromptSRC/
# vit_l14_c2_ep20_batch8_4+4ctx.yaml): PromptSRC's base-to-novel recipe on OpenAI's ViT-L/14 with batch 8 and
# lr 0.005. Its learned.safetensors (work_dirs/promptsrc/vit_l14/<dataset>/) is what configs/promptkd reads.
from mmengine.config import read_base

with read_base():
    from ...promptsrc._method import *

model.backbone = dict(name="ViT-L-14", pretrained="openai")
optim_wrapper.optimizer.lr = 0.005
train_batch_size = 8
train_dataloader.batch_size = train_batch_size
