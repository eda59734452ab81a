# Meta-training on the toy caption pool (2000 unlabelled image-caption pairs, generated on first use). Every
# setting is a design choice the GRAM paper leaves open (see the README's GRAM section).
pairs = dict(format="toy", pairs=2000, max_failure_fraction=0.1)
clustering = dict(domains=4, classes_per_domain=12, coarse_on="joint", fine_on="joint", iterations=20, seed=1)
tasks = dict(n_way=5, k_shot=4, q_query=8)
meta = dict(iterations=200, meta_batch=2, inner_steps=5, inner_lr=0.02, outer_lr=1e-4, regulator_lr=1e-2,
            second_order=False, outer_query="cross_domain", learn_init=True, learn_regulator=True,
            checkpoint_interval=25, seed=1)
regulator = dict(type="gate", from_gradient=True)
encode_batch_size = 256
