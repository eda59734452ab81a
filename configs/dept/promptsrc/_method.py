# DePT over PromptSRC: in DePT's paper table, not in its code (reimplemented: docs/methods/dept.md lists the
# choices). PromptSRC's own recipe (lr 0.0025, 20 epochs, batch 4, GPA over every learned tensor, the head's
# too) with DePT's head: its share 0.7 and 6.5 times the learning rate, as DePT gives every learner.
from mmengine.config import read_base

with read_base():
    from ...promptsrc._method import *

model.learner.update(type="dept_promptsrc", dept_weight=0.7)
optim_wrapper.paramwise_cfg = dict(custom_keys={"dept_head": dict(lr_mult=6.5)})
