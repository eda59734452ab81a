"""Every shipped config loads, names its dataset after its file, and toy configs use the toy CLIP."""


import pytest
from helpers import CONFIGS, config_id
from mmengine.config import Config

#: configs whose layout the tests of their method check (they train on several datasets or none, or on
#: descriptions): GRAM meta-training (meta/test_gram.py), MVLPT sources and targets (learners/test_mvlpt.py),
#: the description variants of active learning (active/test_active.py)
CHECKED_ELSEWHERE = ("gram/meta_", "mvlpt/", "active/descriptions/")


@pytest.mark.parametrize("path", CONFIGS, ids=config_id)
def test_config_loads_and_matches_its_file_name(path):
    cfg = Config.fromfile(str(path))
    if config_id(path).startswith(CHECKED_ELSEWHERE):
        return
    test = cfg.test_dataloader.dataset
    stem = path.stem.removesuffix("_xd")
    if stem != "imagenet" or not path.stem.endswith("_xd"):
        assert test.name.replace("-", "_") == stem
    assert cfg.model.learner.type
    expected = "toy" if path.stem.startswith("toy_") else "ViT-B-16"
    assert cfg.model.backbone.name == expected
    if cfg.get("train_dataloader") is not None and path.parent.name == "active":
        # active learning (PCB): the whole train split is the pool, the rounds train on a LabelledSubset of it
        assert cfg.train_dataloader.dataset.type.__name__ == "LabelledSubset"
        assert cfg.train_dataloader.dataset.dataset.name == test.name
        assert cfg.train_dataloader.dataset.dataset.get("num_shots") is None and test.subsample == "all"
    elif cfg.get("train_dataloader") is not None:
        assert cfg.train_dataloader.dataset.name == test.name
        # KgCoOp's only cross-dataset script (scripts/xd_train.sh) trains on 4 shots; every other recipe on 16
        kgcoop_xd = path.parent.name == "kgcoop" and path.stem == "imagenet_xd"
        smm_codan = path.parent.name == "smm" and path.stem == "codan"  # SMM's recipe: all 10,000 day images
        assert cfg.train_dataloader.dataset.num_shots == (4 if kgcoop_xd else None if smm_codan else 16)
