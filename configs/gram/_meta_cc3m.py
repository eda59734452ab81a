# Meta-training on a CC3M-style corpus of unlabelled image-caption pairs: webdataset tar shards as img2dataset
# writes them (<key>.jpg + <key>.txt), e.g. --cfg-options "pairs.path=/data/cc3m/{00000..00331}.tar".
# Unreadable shards, images that do not decode and pairs without a caption are skipped and counted; the run
# stops when more than max_failure_fraction of the pairs fail. `limit` caps the pairs read (their features are
# cached in the work dir; images too for learners that prompt the image tower, 150 KB a pair at 224 px). The
# toy pool's settings otherwise (_meta_toy.py), with more domains, pseudo-classes, ways and steps. Every
# setting is a design choice the GRAM paper (reimplemented from the paper: no official code) leaves open.
from mmengine.config import read_base

with read_base():
    from ._meta_toy import *

pairs = dict(format="webdataset", path="data/cc3m/{00000..00331}.tar", max_failure_fraction=0.1, limit=200000)
clustering.update(domains=16, classes_per_domain=64)
tasks.update(n_way=10)
meta.update(iterations=5000, meta_batch=4, checkpoint_interval=100)
