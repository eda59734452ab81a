# Few-shot recipe: K shots of every class (16 here; set train_dataloader.dataset.num_shots for 1/2/4/8), tested
# on all classes.
train_dataloader = dict(dataset=dict(subsample="all", num_shots=16))
test_dataloader = dict(dataset=dict(subsample="all"))
protocol = dict(name="few-shot", num_shots=16)
