"""Trust, second pass (issue 30), item 1 and the file cases of item 9: every tensor vlprompt reads from a
file goes through one check (the expected keys and shapes, floating where a float is expected, finite),
refused naming the file and the key: learned prompts (``load_learner``, ``load_from`` .safetensors and
.pth), GRAM files (initialisation and regulator), meta-training states and darkening modules."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import ROOT, write_learned
from safetensors import safe_open
from safetensors.torch import save_file

from vlprompt.backbones import CheckpointError


def rewrite(path, edit) -> None:
    """Rewrite a safetensors file with ``edit(tensors)`` applied, keeping its metadata."""
    with safe_open(str(path), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118 - safe_open
    edit(tensors)
    save_file(tensors, str(path), metadata=meta)


def poison(key_part: str, value=math.nan):
    def edit(tensors):
        key = next(k for k in tensors if key_part in k)
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[0] = value
    return edit


def cast(key_part: str, dtype):
    def edit(tensors):
        key = next(k for k in tensors if key_part in k)
        tensors[key] = (tensors[key] * 100).to(dtype)
    return edit


# ------------------------------------------------------------------------------- learned prompts
@pytest.mark.parametrize("edit, message", [
    (poison("ctx"), r"ctx holds non-finite values \(nan\)"),
    (poison("ctx", math.inf), r"ctx holds non-finite values \(inf"),
    (cast("ctx", torch.int32), r"ctx holds torch.int32 values in the file.*refusing to cast"),
    (cast("ctx", torch.bool), r"ctx holds torch.bool values"),
])
def test_a_learned_file_with_bad_values_is_refused_naming_file_and_key(tmp_path, edit, message):
    from vlprompt import load_prompted_clip
    from vlprompt.learned import load_learner

    path = write_learned(tmp_path / "learned.safetensors")
    load_learner(path)  # the file as written loads
    rewrite(path, edit)
    with pytest.raises(CheckpointError, match=rf"{path}: .*{message}"):
        load_learner(path)
    with pytest.raises(CheckpointError, match=message):
        load_prompted_clip(path)


def test_load_from_a_pth_with_nan_prompts_is_refused(tmp_path):
    """A training checkpoint given as ``load_from`` goes through the same check as a learned file."""
    from vlprompt.engine import PromptModel
    from vlprompt.learned import load_learned_into

    source = write_learned(tmp_path / "learned.safetensors")
    with safe_open(str(source), framework="pt") as f:
        state, meta = {f"learner.{k}": f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["vlprompt"])  # noqa: SIM118
    model = PromptModel(dict(name="test-tiny", pretrained=None), dict(type="coop"), ["red circle", "blue star",
                                                                                    "sea lion"])
    good = tmp_path / "epoch_1.pth"
    torch.save({"state_dict": state, "vlprompt": meta}, good)
    load_learned_into(model, good)
    assert torch.equal(model.learner.ctx.detach(), state["learner.ctx"])
    state["learner.ctx"] = state["learner.ctx"].clone()
    state["learner.ctx"][0, 0] = math.nan
    bad = tmp_path / "epoch_2.pth"
    torch.save({"state_dict": state, "vlprompt": meta}, bad)
    with pytest.raises(CheckpointError, match=rf"{bad}: ctx holds non-finite values \(nan\)"):
        load_learned_into(model, bad)


def test_training_from_a_nan_source_prompt_stops_before_training(tmp_path):
    """``load_from`` (a source prompt, as MVLPT's targets start from) with NaN stops the run, naming the
    file, instead of the 'lower the learning rate' of a diverged run."""
    from toy_run import FAST, train_tool

    source = write_learned(tmp_path / "src" / "learned.safetensors", class_names=("red circle", "green square"),
                           n_ctx=4, ctx_init="a photo of a",
                           class_token_position="end")
    rewrite(source, poison("ctx"))
    argv = [str(ROOT / "configs/coop/toy_shapes.py"), "--work-dir", str(tmp_path / "w"), "--no-test",
            "--cfg-options", *FAST, "train_cfg.max_epochs=1", f"load_from={source}"]
    with pytest.raises(CheckpointError, match=rf"{source}: ctx holds non-finite values"):
        train_tool.main(argv)
    assert not list((tmp_path / "w").glob("*.pth"))


# ------------------------------------------------------------------------------------- GRAM files
TINY = {"name": "test-tiny", "pretrained": None}
COOP = {"type": "coop", "n_ctx": 4, "ctx_init": "a photo of a", "class_token_position": "end"}


@pytest.fixture
def gram_file(tmp_path):
    from vlprompt.meta import save_gram_file
    from vlprompt.meta.gram import build_meta_learner

    learner, regulator = build_meta_learner(COOP, TINY, {"type": "gate"}, ["a", "b"])
    return save_gram_file(tmp_path / "gram.safetensors", learner, TINY, regulator, {"test": True})


def _edit_meta(path, edit) -> None:
    with safe_open(str(path), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118 - safe_open
    inner = json.loads(meta["vlprompt"])
    meta["vlprompt"] = json.dumps(edit(inner))
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize("edit, message", [
    (poison("init."), r"init\.ctx holds non-finite values \(nan\)"),
    (cast("init.", torch.int64), r"init\.ctx holds torch.int64 values"),
    (poison("regulator.bias"), r"regulator\.bias\.ctx holds non-finite values"),
    (poison("regulator.weight", math.inf), r"regulator\.weight\.ctx holds non-finite values \(inf"),
    (lambda t: t.pop("regulator.weight.ctx"), r"do not fit regulator 'gate': it lacks regulator\.weight\.ctx"),
    (lambda t: t.update({"regulator.bias.ctx": torch.zeros(3)}), r"regulator\.bias\.ctx has shape \(3,\)"),
])
def test_a_gram_file_with_bad_tensors_is_refused(gram_file, edit, message):
    from vlprompt.meta import read_gram_file

    read_gram_file(gram_file)
    rewrite(gram_file, edit)
    with pytest.raises(CheckpointError, match=rf"{gram_file}: .*{message}"):
        read_gram_file(gram_file)


@pytest.mark.parametrize("edit, message", [
    (lambda m: [m], r"not a GRAM meta-trained file \(metadata kind='list'"),
    (lambda m: {**m, "learner": "coop"}, r"metadata key 'learner' = 'coop' is not a mapping"),
    (lambda m: {**m, "regulator": {**m["regulator"], "eps": "abc"}}, r"metadata key 'regulator' = .* does not build"),
    (lambda m: {**m, "regulator": {**m["regulator"], "sharpness": 2}}, r".*does not build a regulator .*sharpness"),
])
def test_gram_metadata_that_cannot_be_a_gram_file_is_refused(gram_file, edit, message):
    from vlprompt.meta import read_gram_file

    _edit_meta(gram_file, edit)
    with pytest.raises(CheckpointError, match=rf"{gram_file}: {message}"):
        read_gram_file(gram_file)


# --------------------------------------------------------------------------- meta-training states
@pytest.fixture
def meta_learner():
    from vlprompt.meta import MetaLearner, MetaSettings
    from vlprompt.meta.gram import build_meta_learner

    learner, regulator = build_meta_learner(COOP, TINY, {"type": "gate"}, ["a", "b"])
    return MetaLearner(learner, regulator, None, None, MetaSettings(iterations=2))


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("init"), r"it lacks 'init'"),
    (lambda s: s.update(init=[1, 2]), r"key 'init' is a list, not a mapping"),
    (lambda s: s["init"].update(ctx=torch.zeros(2, 2)), r"init\.ctx has shape \(2, 2\) in the file"),
    (lambda s: s["init"]["ctx"].fill_(math.nan), r"init\.ctx holds non-finite values \(nan\)"),
    (lambda s: s["regulator"]["bias.ctx"].fill_(math.inf), r"regulator\.bias\.ctx holds non-finite values"),
    (lambda s: s.update(rng="garbage"), r"rng, history or optimizer state cannot be resumed"),
    (lambda s: s.update(rng=json.dumps({"bit_generator": "PCG64", "state": 3})), r"cannot be resumed"),
])
def test_a_meta_state_that_does_not_fit_is_refused_and_changes_nothing(tmp_path, meta_learner, edit, message):
    state = meta_learner.state_dict()
    before = {n: p.detach().clone() for n, p in meta_learner.params.items()}
    rng_before = json.dumps(meta_learner.rng.bit_generator.state)
    edit(state)
    with pytest.raises(CheckpointError, match=rf"meta_state\.pth: .*{message}"):
        meta_learner.load_state_dict(state, tmp_path / "meta_state.pth")
    assert all(torch.equal(before[n], p) for n, p in meta_learner.params.items())
    assert json.dumps(meta_learner.rng.bit_generator.state) == rng_before


def test_a_meta_state_file_that_is_not_a_mapping_is_refused(tmp_path):
    from vlprompt.meta.run import meta_train

    work = tmp_path / "meta"
    work.mkdir()
    torch.save([1, 2, 3], work / "meta_state.pth")
    cfg = {"backbone": TINY, "learner": COOP, "pairs": {"format": "tsv", "path": str(tmp_path / "none.tsv")},
           "meta": {"iterations": 1}, "regulator": {"type": "gate"}}
    with pytest.raises(CheckpointError, match=r"meta_state\.pth: not a meta-training state \(a list"):
        meta_train(cfg, work, log=lambda _: None)


# ------------------------------------------------------------------------------ darkening modules
@pytest.mark.parametrize("edit, message", [
    (poison("weight"), r"holds non-finite values \(nan\)"),
    (cast("weight", torch.int32), r"holds torch.int32 values"),
])
def test_a_darkening_module_with_bad_values_is_refused(tmp_path, edit, message):
    from vlprompt.daynight.darkening import DarkeningNet, load_darkening, save_darkening

    path = save_darkening(DarkeningNet(width=8), tmp_path / "darkening.safetensors")
    load_darkening(path)
    rewrite(path, edit)
    with pytest.raises(CheckpointError, match=rf"{path}: .*{message}"):
        load_darkening(path)
