# Zero-shot CLIP with class descriptions: each class's feature is the mean over "{class}, which is
# {description}" prompts (Menon & Vondrick; a description that names its class is used as written, CuPL),
# here the dataset's own descriptions (the toy world's knowledge.json). Nothing is trained.
from mmengine.config import read_base

with read_base():
    from .._method import *

model.learner.descriptions = dict(dataset="<dataset>")
