# Meta-training on a CC3M-style corpus of unlabelled image-caption pairs: webdataset tar shards as img2dataset
# writes them (<key>.jpg + <key>.txt), e.g. --cfg-options pairs.path=/data/cc3m/{00000..00331}.tar Unreadable
# shards, images that do not decode and pairs without a caption are skipped and counted; the run stops when more
# than max_failure_fraction of the pairs fail. `limit` caps the pairs read (the features of the pairs read are
# cached in the work dir; images too for learners that prompt the image tower, 150 KB a pair at 224 px). Every
# setting is a design choice the GRAM paper leaves open.
pairs = dict(format="webdataset", path="data/cc3m/{00000..00331}.tar", max_failure_fraction=0.1, limit=200000)
clustering = dict(domains=16, classes_per_domain=64, coarse_on="joint", fine_on="joint", iterations=20, seed=1)
tasks = dict(n_way=10, k_shot=4, q_query=8)
meta = dict(iterations=5000, meta_batch=4, inner_steps=5, inner_lr=0.02, outer_lr=1e-3, regulator_lr=1e-2,
            second_order=False, outer_query="cross_domain", learn_init=True, learn_regulator=True,
            checkpoint_interval=100, seed=1)
regulator = dict(type="gate", from_gradient=True)
encode_batch_size = 256
