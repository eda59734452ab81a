# Runtime settings shared by every run: hooks, logging, environment, seed.
from mmengine.hooks import DistSamplerSeedHook, IterTimerHook, LoggerHook, ParamSchedulerHook
from mmengine.visualization import LocalVisBackend, Visualizer

from vlprompt.engine.hooks import DurableCheckpointHook

default_scope = None
default_hooks = dict(
    timer=dict(type=IterTimerHook),
    logger=dict(type=LoggerHook, interval=20),
    param_scheduler=dict(type=ParamSchedulerHook),
    checkpoint=dict(type=DurableCheckpointHook, interval=1, max_keep_ckpts=1, save_last=True),
    sampler_seed=dict(type=DistSamplerSeedHook),
)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
               dist_cfg=dict(backend="nccl"))
visualizer = dict(type=Visualizer, vis_backends=[dict(type=LocalVisBackend)])
tensorboard = False  # True (or --tensorboard): also write TensorBoard events (pip install -e ".[tensorboard]")
log_processor = dict(by_epoch=True, window_size=10)
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=1, deterministic=False)
