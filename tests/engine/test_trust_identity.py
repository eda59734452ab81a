"""Issue 30 item 3: a file made on one backbone's weights is refused on another's, naming both.

Learned files and GRAM files record the weights' digest (``PromptableCLIP.weights_digest``): a GRAM
file meta-trained on the toy teacher's weights (or on random weights) does not start a run on the toy
CLIP's, a prompt trained on other weights does not load as a source prompt (``load_from``), and a
learned file whose tag now holds other weights is refused unless the caller asks for other weights.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import write_learned
from safetensors import safe_open
from safetensors.torch import save_file

TOY = {"name": "toy", "pretrained": "toy"}
TEACHER = {"name": "toy", "pretrained": "toy-teacher"}
COOP = {"type": "coop", "n_ctx": 4, "ctx_init": "a photo of a", "class_token_position": "end"}


def _edit_meta(path, edit) -> None:
    with safe_open(str(path), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118 - safe_open
    meta["vlprompt"] = json.dumps(edit(json.loads(meta["vlprompt"])))
    save_file(tensors, str(path), metadata=meta)


def test_the_weights_digest_tells_weights_apart_but_not_their_precision():
    from vlprompt.backbones import build_clip

    toy = build_clip(**TOY)
    assert toy.weights_digest == build_clip(**TOY, dtype=torch.bfloat16).weights_digest
    assert toy.weights_digest != build_clip(**TEACHER).weights_digest
    assert build_clip("toy", None).weights_digest == "random"
    assert toy.identity == {"arch": "toy", "pretrained": "toy", "weights": toy.weights_digest}


@pytest.mark.parametrize("made_on", [TEACHER, {"name": "toy", "pretrained": None}], ids=["teacher", "random"])
def test_a_gram_file_from_other_weights_does_not_start_a_run(tmp_path, made_on):
    from vlprompt.backbones import CheckpointError
    from vlprompt.meta.gram import build_meta_learner, save_gram_file
    from vlprompt.meta.model import GRAMModel

    learner, regulator = build_meta_learner(COOP, made_on, {"type": "gate"}, ["a", "b"])
    path = save_gram_file(tmp_path / "gram.safetensors", learner, made_on, regulator, {})
    made = r"random \(untrained\) weights" if made_on["pretrained"] is None else learner.backbone.weights_digest
    made = made if made_on["pretrained"] is None else f"weights {made}"
    with pytest.raises(CheckpointError, match=rf"meta-trained on backbone {made}, .*'toy' "
                                              r"\(pretrained='toy'\) has weights [0-9a-f]{16}"):
        GRAMModel(TOY, COOP, ["red circle", "blue star"], gram={"file": str(path)})
    GRAMModel(made_on, COOP, ["red circle", "blue star"], gram={"file": str(path)})  # its own weights: fine


def test_a_source_prompt_from_other_weights_does_not_load(tmp_path):
    from vlprompt.backbones import CheckpointError
    from vlprompt.engine import PromptModel
    from vlprompt.learned import load_learned_into

    path = write_learned(tmp_path / "learned.safetensors", backbone=TEACHER)
    model = PromptModel(TOY, {"type": "coop"}, ["red circle", "blue star", "sea lion"])
    before = model.learner.ctx.detach().clone()
    with pytest.raises(CheckpointError, match=r"learned.safetensors was trained on backbone weights [0-9a-f]{16}"):
        load_learned_into(model, path)
    assert torch.equal(model.learner.ctx, before)  # nothing loaded
    load_learned_into(PromptModel(TEACHER, {"type": "coop"}, ["red circle", "blue star", "sea lion"]), path)


def test_a_learned_file_whose_tag_now_holds_other_weights_is_refused_unless_asked(tmp_path):
    from vlprompt.backbones import CheckpointError
    from vlprompt.learned import load_learner

    path = write_learned(tmp_path / "learned.safetensors", backbone=TOY)
    assert load_learner(path).backbone.weights_digest == json.loads(
        safe_open(str(path), framework="pt").metadata()["vlprompt"])["backbone_weights"]
    _edit_meta(path, lambda m: {**m, "backbone_weights": "0123456789abcdef"})
    with pytest.raises(CheckpointError, match=r"trained on backbone weights 0123456789abcdef"):
        load_learner(path)
    load_learner(path, backbone={"pretrained": "toy-teacher"})  # other weights on purpose: the caller's choice
    _edit_meta(path, lambda m: {k: v for k, v in m.items() if k != "backbone_weights"})
    load_learner(path)  # a file from before digests were recorded still loads


# ------------------------------------------------------------------------------------------ active_state.json
def _active_run_state(tmp_path, **changes):
    """An active run's folder whose state was written by ``toy_hues`` with round 0 finished, with the recorded
    identity edited by ``changes``; the run's config, settings and folder."""
    from helpers import ROOT

    from vlprompt.active import ActiveSettings
    from vlprompt.active import loop as active_loop
    from vlprompt.engine import load_config

    cfg = load_config(str(ROOT / "configs/active/toy_hues.py"), None, {})
    settings = ActiveSettings(sampler="random", pcb=False, rounds=2)
    pool = active_loop.build_pool(cfg, 32)
    state = {**active_loop._identity(settings, 1, len(pool), list(pool.classnames), cfg), "rounds": [
        {"round": 0, "selected": list(range(4)), "labelled": 4, "candidates": None, "top1": 50.0,
         "class_counts": [1] * len(pool.classnames), "balance": 1.0, "classes_seen": 4, "select_s": 0.1,
         "round_s": 1.0}]}
    for key, value in changes.items():
        group, _, name = key.partition(".")
        if name:
            state[group] = {**state[group], name: value}
        else:
            state[group] = value
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "active_state.json").write_text(json.dumps(state))
    return cfg, settings, run_dir


@pytest.mark.parametrize("key, value, named", [
    ("training.lr", 0.5, r"training.lr \(0.5 there, 0.002 here\)"),
    ("training.max_epochs", 1, r"training.max_epochs \(1 there"),
    ("backbone.pretrained", "toy-teacher", r"backbone.pretrained \('toy-teacher' there, 'toy' here\)"),
])
def test_an_active_run_resumes_only_with_the_training_and_backbone_it_started_with(tmp_path, key, value, named):
    from vlprompt.active import run_active
    from vlprompt.errors import ConfigError

    cfg, settings, run_dir = _active_run_state(tmp_path, **{key: value})
    with pytest.raises(ConfigError, match=rf"{run_dir / 'active_state.json'} was written by a run with another "
                                          rf"{named}"):
        run_active(cfg, run_dir, settings, seed=1)
    assert not (run_dir / "round1").exists()


def test_an_active_run_resumes_only_on_the_weights_its_rounds_trained_on(tmp_path):
    from vlprompt.active import run_active
    from vlprompt.backbones import CheckpointError

    cfg, settings, run_dir = _active_run_state(tmp_path, backbone_weights="0123456789abcdef")
    with pytest.raises(CheckpointError, match=rf"{run_dir / 'active_state.json'} was written on backbone weights "
                                              r"0123456789abcdef, but this run's backbone 'toy'"):
        run_active(cfg, run_dir, settings, seed=1)
    assert not (run_dir / "round1").exists()
