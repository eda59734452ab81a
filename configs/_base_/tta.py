# Test-time adaptation (tools/tta.py): one test split, adapted and predicted one sample at a time.
# The class names are the test dataset's (ImageNet-A/-R: their 200 classes, read from their folders);
# the views follow TPT (vlprompt.adapters.TPTViews): 64 per sample, AugMix outside the ImageNet family.
from vlprompt.datasets import build_dataset

data_root = None  # None: $VLPROMPT_DATA; or --cfg-options data_root=/path
test_dataloader = dict(dataset=dict(type=build_dataset, name="<dataset>", split="test"))
# augmix None: TPT's rule, vlprompt.adapters.uses_augmix(dataset name); crop_scale: the random crops' area
# range (torchvision's default, as TPT)
views = dict(n_views=64, augmix=None, crop_scale=(0.08, 1.0))
randomness = dict(seed=1)  # seeds the views of sample i (the same views whatever the process count)
# the order in which an adapter that keeps state across samples (TDA, DMN, BoostAdapter, TPT with episodic=False)
# sees the test set: a shuffle drawn with this seed, recorded in results.json (vary it for the spread over orders)
stream = dict(seed=1)
