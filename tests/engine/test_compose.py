"""Runs composed from a method and a dataset: every method on every registered dataset (and each
overlay) gives the published recipe, and every config file of configs/ loads.

The published values below are the official repositories' (their YAML configs and scripts, as the
``configs/<method>/_method.py`` comments cite them) and CoOp's ``CUSTOM_TEMPLATES``; they are written
here as literals on purpose, so that a change to a method file or a dataset's facts that drifts from
the published recipe fails.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import ROOT

from vlprompt.datasets import dataset_facts, list_datasets
from vlprompt.engine.compose import compose_config, list_methods, list_overlays, resolve_config
from vlprompt.errors import ConfigNotFoundError

DATASETS = list_datasets()
METHODS = list_methods()

# CoOp's trainers/zsclip.py CUSTOM_TEMPLATES (ImageNet and its variants: "a photo of a {}.")
COOP_TEMPLATES = {
    "oxford-pets": "a photo of a {}, a type of pet.", "oxford-flowers": "a photo of a {}, a type of flower.",
    "fgvc-aircraft": "a photo of a {}, a type of aircraft.", "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.", "stanford-cars": "a photo of a {}.",
    "food101": "a photo of {}, a type of food.", "sun397": "a photo of a {}.", "caltech101": "a photo of a {}.",
    "ucf101": "a photo of a person doing {}.",
}
IMAGENET_FAMILY = ("imagenet", "imagenet-v2", "imagenet-sketch", "imagenet-a", "imagenet-r")

# learner settings, SGD lr, epochs, batch and shots of each method's base-to-novel recipe; epochs on the toy world
PUBLISHED = {
    "coop": dict(learner=dict(type="coop", n_ctx=4, ctx_init="a photo of a"), lr=0.002, epochs=200, batch=32),
    "cocoop": dict(learner=dict(type="cocoop", n_ctx=4, ctx_init="a photo of a"), lr=0.002, epochs=10, batch=1),
    "kgcoop": dict(learner=dict(type="kgcoop", n_ctx=4, ctx_init="a photo of a", w=8.0), lr=0.002, epochs=100,
                   batch=128),
    "maple": dict(learner=dict(type="maple", n_ctx=2, ctx_init="a photo of a", depth=9), lr=0.0035, epochs=5, batch=4),
    "promptsrc": dict(learner=dict(type="promptsrc", n_ctx_text=4, n_ctx_vision=4, text_depth=9, vision_depth=9,
                                   text_loss_weight=25.0, image_loss_weight=10.0), lr=0.0025, epochs=20, batch=4),
    "ivlp": dict(learner=dict(type="ivlp", n_ctx_text=4, n_ctx_vision=4, text_depth=9, vision_depth=9), lr=0.0025,
                 epochs=20, batch=4),
    "vpt": dict(learner=dict(type="vpt", n_ctx=8, depth=12), lr=0.0025, epochs=5, batch=4),
    "kapt": dict(learner=dict(type="kapt", n_ctx=4, ctx_init="a photo of a"), lr=0.002, epochs=200, batch=32),
    "active": dict(learner=dict(type="coop", n_ctx=16, ctx_init="", class_specific=True), lr=0.002, epochs=200,
                   batch=32),
    "mvlpt/mcoop": dict(learner=dict(type="mcoop", n_ctx=16, ctx_init=""), lr=0.002, epochs=200, batch=32),
}
# TCP's frozen template and learnable prompt suffix, where the official tables differ from CoOp's template and "{}."
TCP_PROMPTS = {
    "oxford-pets": ("a photo of a {}, a type of pet.", "{}, a type of pet."),
    "oxford-flowers": ("a photo of a {}, a type of flower.", "{}, a type of flower."),
    "fgvc-aircraft": ("a photo of an aircraft {}.", "{}, a type of aircraft."),
    "dtd": ("a photo of a {}, a type of texture.", "{} texture."),
    "stanford-cars": ("a photo of a {}.", "{}, a type of car"),
    "food101": ("a photo of a {}, a type of food.", "{}, a type of food."),
    "eurosat": (None, "{}."),
    "ucf101": (None, "person doing {}."),
}
TOY_EPOCHS = {"coop": 50, "cocoop": 5, "kgcoop": 50, "maple": 5, "promptsrc": 8, "ivlp": 8, "vpt": 5, "kapt": 50,
              "active": 10}
GRAM_FILES = {"gram/coop": "coop", "gram/maple": "maple", "gram/promptsrc": "promptsrc", "gram/vpt": "vpt",
              "gram/unigram": "unigram", "gram/coop_init_only": "coop", "gram/coop_regulator_only": "coop"}
GRAM_LEARNERS = {"gram/unigram": "ivlp", "gram/coop_init_only": "coop", "gram/coop_regulator_only": "coop"}


def base_method(method: str) -> str:
    """The method whose recipe a variant keeps (``gram/maple`` -> ``maple``, ``kapt/no_head`` -> ``kapt``)."""
    if method in GRAM_LEARNERS:
        return GRAM_LEARNERS[method]
    if method.startswith("gram/"):
        return method.split("/")[1]
    return method.split("/")[0] if method.split("/")[0] in PUBLISHED else method


def check_recipe(method: str, dataset: str, cfg, overlays: tuple[str, ...] = ()) -> None:
    """``cfg`` against the published recipe of ``method`` on ``dataset``."""
    facts = dataset_facts(dataset)
    name, toy = facts["name"], facts["family"] == "toy"
    xd = "cross_dataset" in overlays
    loaders = [cfg.get(k) for k in ("train_dataloader", "test_dataloader") if cfg.get(k)]
    for loader in loaders:  # every dataset the run reads is this one
        data = loader.dataset.get("dataset", loader.dataset)
        assert data.name == name, (method, dataset)
    backbone = cfg.model.backbone
    large = method == "promptsrc/vit_l14"  # PromptKD's teacher
    assert backbone == (dict(name="toy", pretrained="toy") if toy else
                        dict(name="ViT-L-14" if large else "ViT-B-16", pretrained="openai"))
    base = base_method(method)
    learner = cfg.model.get("learner") or {}
    if base in PUBLISHED and not (xd and name == "imagenet" and base in ("maple", "promptsrc", "ivlp")):
        spec = {**PUBLISHED[base], **(dict(lr=0.005, batch=8) if large else {})}
        for key, value in spec["learner"].items():
            assert learner[key] == value, (method, dataset, key)
        assert cfg.optim_wrapper.optimizer.lr == spec["lr"], (method, dataset)
        assert cfg.train_dataloader.batch_size == spec["batch"], (method, dataset)
        imagenet_schedule = name == "imagenet" and base in ("coop", "kapt")  # CoOp's 50 ImageNet epochs
        epochs = TOY_EPOCHS.get(base, spec["epochs"]) if toy else 50 if imagenet_schedule else spec["epochs"]
        if method == "promptsrc/few_shot":
            epochs = 50
        assert cfg.train_cfg.max_epochs == epochs, (method, dataset)
        shots = cfg.train_dataloader.dataset.get("num_shots")
        if base == "active":
            assert shots is None and cfg.train_dataloader.dataset.dataset.subsample == "all"
        elif method.startswith("mvlpt/"):
            assert shots == 5 and cfg.protocol == dict(name="few-shot", num_shots=5)
        elif method == "promptsrc/few_shot":
            assert shots == 16 and cfg.protocol == dict(name="few-shot", num_shots=16)
        else:
            assert shots == (4 if base == "kgcoop" and xd and name == "imagenet" else 16), (method, dataset)
            subsample = "all" if xd else "base"
            assert cfg.train_dataloader.dataset.subsample == subsample == cfg.test_dataloader.dataset.subsample
    if base == "kgcoop":  # KgCoOp's table: CoOp's, but for DTD
        want = "a photo of a {}, a type of texture." if name == "dtd" else COOP_TEMPLATES.get(name, "a photo of a {}.")
        assert learner.template == want
    if base == "zsclip":
        assert learner.templates == COOP_TEMPLATES.get(name, "a photo of a {}.")
    if base == "kapt" and method != "kapt/no_discrete":
        assert learner.knowledge == (dict(dataset=name) if toy else facts["knowledge"])
    if method.startswith("gram/"):
        corpus = "toy" if toy else "cc3m_xd" if (xd and name == "imagenet") else "cc3m"
        assert cfg.model.type.__name__ == "GRAMModel"
        assert cfg.model.gram.file == f"work_dirs/gram/meta_{GRAM_FILES[method]}_{corpus}/gram.safetensors"
    if method in ("tpt", "rlcf"):
        assert cfg.views.n_views == (32 if toy else 64)
        if method == "rlcf":
            fine_grained = not toy and name not in IMAGENET_FAMILY
            assert cfg.adapter.steps == (5 if fine_grained else 3), dataset
            assert cfg.adapter.teacher == (dict(name="toy", pretrained="toy-teacher") if toy
                                           else dict(name="ViT-L-14", pretrained="openai"))
        else:
            assert cfg.adapter.steps == 1 and cfg.adapter.lr == 5e-3
    if method == "tcp":  # scripts/base2new_train.sh with vit_b16_ep100_ctxv1 (Adam, eps 1e-3 as published)
        assert (learner.n_ctx, learner.ctx_init, learner.w, learner.layer) == (4, "", 8.0, None)
        optim = cfg.optim_wrapper.optimizer
        assert (optim.type.__name__, optim.lr, optim.eps, optim.weight_decay) == ("Adam", 0.002, 1e-3, 5e-4)
        assert cfg.train_dataloader.batch_size == 32
        assert cfg.train_cfg.max_epochs == (25 if name in ("imagenet", "sun397") else 50)  # the toy world too
        template, suffix = TCP_PROMPTS.get(name, ("a photo of a {}.", "{}."))
        if name in ("eurosat", "ucf101"):
            template = COOP_TEMPLATES[name]
        assert (learner.template, learner.prompt_template) == (template, suffix), dataset
    if method == "promptkd":  # scripts/promptkd/base2new_train.sh with vit_b16_c2_ep20_batch8_4+4ctx
        assert (learner.n_ctx, learner.depth if not xd else 9, learner.temperature) == (4, 9, 1.0)
        assert learner.kd_weight == (200.0 if name in ("fgvc-aircraft", "oxford-flowers", "dtd") else 1000.0)
        teacher = dict(name="toy", pretrained="toy-teacher") if toy else \
            f"work_dirs/promptsrc/vit_l14/{'imagenet_xd' if xd else name.replace('-', '_')}/learned.safetensors"
        assert learner.teacher == teacher and (not xd or learner.depth == 3)
        optim = cfg.optim_wrapper.optimizer
        assert (optim.lr, cfg.train_dataloader.batch_size, cfg.train_cfg.max_epochs) == (0.005, 8, 5 if toy else 20)
        data = cfg.train_dataloader.dataset
        assert (data.subsample, data.num_shots) == ("all", None)  # every training image of every class
    if method == "promptkd/own_size_teacher":  # PromptSRC on the student's own backbone, from its default work dir
        leaf = name.replace("-", "_")
        want = "imagenet_xd" if xd and not toy else f"{leaf}_xd" if xd else leaf
        assert learner.teacher == f"work_dirs/promptsrc/{want}/learned.safetensors"
    if method.startswith("dept/"):  # Koorye/DePT: every dataset alike; PromptSRC keeps its own recipe
        inner = method.split("/")[1]
        assert (learner.type, learner.dept_weight) == (f"dept_{inner}", 0.7)
        assert cfg.optim_wrapper.paramwise_cfg == dict(custom_keys={"dept_head": dict(lr_mult=6.5)})
        lr, batch, epochs = dict(cocoop=(0.002, 1, 10), promptsrc=(0.0025, 4, 8 if toy else 20)).get(
            inner, (0.0035, 4, 10))
        assert (cfg.optim_wrapper.optimizer.lr, cfg.train_dataloader.batch_size, cfg.train_cfg.max_epochs) == \
            (lr, batch, epochs), (method, dataset)
        if inner == "coop":
            assert (learner.n_ctx, learner.ctx_init) == (16, "")
        if inner == "kgcoop":
            assert learner.w == 2.0
        if inner == "maple":
            assert learner.depth == 9  # also in the ImageNet cross-dataset source run
    if method == "promptsrc/few_shot":
        narrow = name in ("stanford-cars", "oxford-flowers", "fgvc-aircraft", "dtd", "eurosat")
        assert [(h.mean, h.std) for h in cfg.custom_hooks] == [(45, 5) if narrow else (30, 30)]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_composes_the_published_recipe_on_every_dataset(method):
    assert len(DATASETS) >= 40  # the 16 benchmarks, the ELEVATER tasks and the toy world
    for dataset in DATASETS:
        cfg = compose_config(method, dataset)
        assert Path(cfg.filename).name == dataset.replace("-", "_") + ".py"
        check_recipe(method, dataset, cfg)


@pytest.mark.parametrize("overlay", list_overlays())
def test_every_overlay_composes_over_every_learner(overlay):
    learners = [m for m in METHODS if base_method(m) in PUBLISHED and not m.startswith(("mvlpt/", "active"))
                and m != "promptsrc/few_shot"]
    for method in learners:
        for dataset in ("imagenet", "dtd", "toy-shapes"):
            cfg = compose_config(method, dataset, [overlay])
            assert cfg.train_dataloader.dataset.subsample == cfg.test_dataloader.dataset.subsample == "all"
            if overlay == "cross_dataset":
                check_recipe(method, dataset, cfg, ("cross_dataset",))
                protocol = "toy-domain-generalization" if dataset.startswith("toy") else "cross-dataset"
                assert cfg.protocol.name == protocol
            else:
                assert cfg.protocol == dict(name="few-shot", num_shots=16)
                assert cfg.train_dataloader.dataset.num_shots == 16


def test_a_leaf_path_composes_exactly_as_method_and_dataset():
    leaf = resolve_config(ROOT / "configs/maple/imagenet_xd.py")
    assert not (ROOT / "configs/maple/imagenet_xd.py").exists()
    composed = compose_config("maple", "imagenet", ["cross_dataset"])
    assert leaf.to_dict() == composed.to_dict()
    # MaPLe's cross-dataset source recipe (vit_b16_c2_ep5_batch4_2ctx_cross_datasets)
    assert (leaf.model.learner.depth, leaf.optim_wrapper.optimizer.lr, leaf.train_cfg.max_epochs) == (3, 0.0026, 2)
    # any spelling of a dataset is the one dataset
    toy = compose_config("coop", "toy-shapes").to_dict()
    assert resolve_config(ROOT / "configs/coop/toy_shapes.py").to_dict() == toy


def test_unknown_method_or_dataset_is_refused_at_once_with_the_closest_names():
    start = time.perf_counter()
    with pytest.raises(ConfigNotFoundError, match=r"unknown method 'cop' \(did you mean coop"):
        resolve_config(ROOT / "configs/cop/dtd.py")
    with pytest.raises(ConfigNotFoundError, match=r"unknown dataset 'toyshapes' \(did you mean toy-shapes"):
        resolve_config(ROOT / "configs/coop/toyshapes.py")
    with pytest.raises(ConfigNotFoundError, match="unknown overlay 'cross'"):
        compose_config("coop", "dtd", ["cross"])
    with pytest.raises(ConfigNotFoundError, match="config not found"):
        resolve_config("/nowhere/coop.yaml")
    assert time.perf_counter() - start < 5  # no dataset, model or runner is built to say so


def test_a_leaf_file_of_pure_composition_names_its_dataset(tmp_path):
    leaf = ROOT / "configs/active/descriptions/toy_hues_ae.py"
    cfg = resolve_config(leaf)
    assert cfg.model.learner.descriptions == dict(dataset="toy-hues") and cfg.model.learner.description_mode == "AE"
    assert cfg.test_dataloader.dataset.name == "toy-hues" and cfg.train_cfg.max_epochs == 10  # the toy recipe
    assert "dataset" not in cfg and "recipe" not in cfg


def test_every_config_file_loads():
    """Every file of configs/ (one recursive glob): methods and variants compose, the rest load as runs."""
    files = sorted((ROOT / "configs").rglob("*.py"))
    assert files
    for path in files:
        rel = path.relative_to(ROOT / "configs")
        if rel.parts[0] in ("_base_", "_overlays_") or path.name.startswith("_"):
            continue  # fragments: composed into runs above
        cfg = resolve_config(path)
        if path.name.startswith("meta_"):  # GRAM meta-training: its downstream run (tests/test_gram.py)
            assert cfg.downstream
            continue
        assert cfg.model.get("learner") is not None or cfg.model.get("type") is not None, rel
        assert "<dataset" not in cfg.pretty_text, rel  # every placeholder filled


def test_method_and_dataset_arguments_name_the_composed_run():
    import argparse

    from vlprompt.cli import add_run_selection, run_selection
    from vlprompt.engine import load_config

    parser = argparse.ArgumentParser()
    add_run_selection(parser)
    path, overlays = run_selection(parser.parse_args(["--method", "maple", "--dataset", "imagenet",
                                                      "--overlay", "cross_dataset"]), parser)
    assert (path, overlays) == ("configs/maple/imagenet.py", ["cross_dataset"])
    cfg = load_config(ROOT / path, None, None, overlays=overlays)
    assert cfg.to_dict() | {"work_dir": None} == load_config(ROOT / "configs/maple/imagenet_xd.py").to_dict() | {
        "work_dir": None}
    for argv in (["--method", "maple"], ["configs/coop/dtd.py", "--method", "coop", "--dataset", "dtd"], [],
                 ["configs/coop/dtd.py", "--overlay", "few_shot"]):
        with pytest.raises(SystemExit):
            run_selection(parser.parse_args(argv), parser)


def test_a_misspelt_recipe_key_is_refused_naming_the_file_and_the_closest_name():
    from vlprompt.engine.compose import check_recipe_keys
    from vlprompt.errors import ConfigNotFoundError

    check_recipe_keys({"toy": {}, "oxford-pets": {}, "imagenet+cross_dataset": {}, "toy+cross_dataset": {}},
                      ["cross_dataset"], "m.py")
    with pytest.raises(ConfigNotFoundError, match=r"m.py: recipe key 'oxford_pets' .*did you mean oxford-pets"):
        check_recipe_keys({"oxford_pets": {}}, ["cross_dataset"], "m.py")
    with pytest.raises(ConfigNotFoundError, match=r"recipe key 'imagenet\+few_shots'"):
        check_recipe_keys({"imagenet+few_shots": {}}, ["cross_dataset", "few_shot"], "m.py")


@pytest.mark.parametrize("method", ["promptkd", "promptkd/own_size_teacher"])
@pytest.mark.parametrize("dataset", ["caltech101", "toy-shapes"])
def test_promptkd_cross_dataset_runs_distil_on_the_target_from_its_teacher(method, dataset):
    """PromptKD's cross-dataset recipe is transductive: the target's own unlabelled images, depth 3, the ImageNet
    teacher; a group+overlay entry ("toy+cross_dataset") keeps the toy world's own teacher."""
    cfg = compose_config(method, dataset, ["cross_dataset"])
    check_recipe(method, dataset, cfg, ("cross_dataset",))
