# PCB on toy-hues with description augmentation AE (the prompt of each class averaged over its descriptions:
# the text embeddings, AE), the toy world's knowledge.json as the descriptions. On a benchmark, point
# descriptions at a file: dict(file="descriptors_dtd.json") (PCB's GPT-3 descriptors, {class: [sentence, ...]}).
from mmengine.config import read_base

with read_base():
    from .._method import *

dataset = "toy-hues"
model.learner.descriptions = dict(dataset="<dataset>")
model.learner.description_mode = "AE"
