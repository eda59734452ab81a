# Cross-dataset and domain-generalization source run (leaf name <dataset>_xd): all classes of the source, 16
# shots, tested on all of them; tools/transfer.py then tests the learned prompts on the protocol's targets.
train_dataloader = dict(dataset=dict(subsample="all"))
test_dataloader = dict(dataset=dict(subsample="all"))
protocol = dict(name="<dataset.transfer_protocol>", num_shots=16)
