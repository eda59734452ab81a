"""Trust in what the engine reads and writes: names from files resolve only among registered ones,
checkpoints survive a failed write and never hold diverged parameters, every load is weights-only,
and bad options or API input get errors that name the culprit.

Each test here failed on the code before the "Trust" change (issue 16)."""

import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT, write_learned
from PIL import Image
from toy_run import CONFIG, FAST, train_tool
from toy_run import train as _train_and_test

import vlprompt
from vlprompt.backbones import CheckpointError, save_safetensors
from vlprompt.engine.checkpoint import find_resume_checkpoint, load_learner, read_learned
from vlprompt.engine.config import load_config
from vlprompt.errors import ConfigError
from vlprompt.registry import LEARNERS, UnregisteredNameError


def _train(work_dir: Path, *options: str, epochs: int = 2, resume: bool = False) -> dict:
    """A toy run without the test after training (these tests look at checkpoints)."""
    return _train_and_test(work_dir, *options, epochs=epochs, resume=resume, test=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One short toy CoOp run (2 epochs): its work dir."""
    work = tmp_path_factory.mktemp("trained")
    _train(work)
    return work


@pytest.fixture(scope="module")
def learned(tmp_path_factory) -> Path:
    """What a toy CoOp run leaves as learned.safetensors, written without training."""
    return write_learned(tmp_path_factory.mktemp("learned") / "learned.safetensors", n_ctx=4,
                         ctx_init="a photo of a", class_token_position="end", config=CONFIG)


def _learned_with_meta(tmp_path: Path, learned: Path, edit) -> Path:
    state, meta = read_learned(learned)
    edit(meta)
    path = tmp_path / "hostile.safetensors"
    save_safetensors(state, path, {"vlprompt": json.dumps(meta)})
    return path


# ---------------------------------------------------------------------------- 1. names from files


def test_metadata_cannot_name_a_callable(tmp_path, learned):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")

    def gadget(meta):  # logging.basicConfig(filename=victim, filemode="w") would truncate the file
        meta["learner"] = {"type": "logging.basicConfig", "filename": str(victim), "filemode": "w", "force": True}

    path = _learned_with_meta(tmp_path, learned, gadget)
    with pytest.raises(CheckpointError, match=r"hostile.safetensors: metadata key 'learner.type' = "
                                              r"'logging.basicConfig' is not a registered learner"):
        load_learner(path)
    assert victim.read_text() == "precious"
    with pytest.raises(CheckpointError, match="is not a registered learner"):
        vlprompt.load_prompted_clip(path)


def test_metadata_cannot_import_a_local_module(tmp_path, learned, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "hubconf.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef load(**kw):\n    pass\n")
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "__init__.py").write_text("")
    (tmp_path / "evil" / "registry.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name in ("hubconf.load", "torch.hub.load", "evil.Thing"):
        path = _learned_with_meta(tmp_path, learned, lambda m, n=name: m["learner"].update(type=n))
        with pytest.raises(CheckpointError, match="is not a registered learner"):
            load_learner(path)
        # and a config that names it is refused at vlprompt's entry point, before mmengine could import it
        with pytest.raises(UnregisteredNameError, match=rf"model.learner.type = '{name}' is not registered"):
            load_config(ROOT / "configs/coop/toy_shapes.py", None, {"model.learner.type": name})
        with pytest.raises(UnregisteredNameError, match="is not a registered learner"):
            LEARNERS.get(name)  # vlprompt's registries resolve among registered names only
    assert not marker.exists()
    from mmengine.registry import Registry

    assert Registry.get.__module__ == "mmengine.registry.registry"  # mmengine's own lookup is left as it is


@pytest.mark.parametrize("edit, key", [
    (lambda m: m["backbone"].update(cache_dir="/tmp/x"), "backbone.cache_dir"),
    (lambda m: m["backbone"].update(name="os.system"), "backbone.name"),
    (lambda m: m["learner"].update(evil=1), "learner.evil"),
    (lambda m: m["learner"].update(n_ctx={"__class__": "x"}), "learner.n_ctx"),
    (lambda m: m.update(class_names="red circle"), "class_names"),
])
def test_metadata_values_are_checked_against_the_learner(tmp_path, learned, edit, key):
    path = _learned_with_meta(tmp_path, learned, edit)
    with pytest.raises((CheckpointError, TypeError), match=f"metadata key '{key}'" if key else "n_ctx"):
        load_learner(path)


def test_training_checkpoint_metadata_is_checked_too(tmp_path, trained):
    ckpt = torch.load(trained / "epoch_2.pth", weights_only=True)
    ckpt["vlprompt"]["learner"]["type"] = "torch.hub.load"
    torch.save(ckpt, tmp_path / "epoch_2.pth")
    with pytest.raises(CheckpointError, match="epoch_2.pth: metadata key 'learner.type'"):
        load_learner(tmp_path / "epoch_2.pth")


# ---------------------------------------------------------------------------- 2. durable checkpoints


def test_failed_checkpoint_write_keeps_the_last_good_one(tmp_path, monkeypatch):
    """A full disk while epoch 2 is written: epoch 1 survives, last_checkpoint names it, resume works."""
    from mmengine.fileio import LocalBackend

    original, calls = LocalBackend.put, []

    def put(self, obj, filepath):
        calls.append(filepath)
        if len(calls) == 2:  # the second checkpoint: half of it reaches the disk, then the disk is full
            Path(filepath).write_bytes(obj[: len(obj) // 2])
            raise OSError(28, "No space left on device")
        return original(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, "put", put)
    work = tmp_path / "run"
    with pytest.raises(OSError, match="No space left"):
        _train(work, epochs=3)
    monkeypatch.setattr(LocalBackend, "put", original)
    assert sorted(p.name for p in work.iterdir() if p.suffix == ".pth" or ".partial" in p.name) == ["epoch_1.pth"]
    assert Path((work / "last_checkpoint").read_text()) == work / "epoch_1.pth"
    torch.load(work / "epoch_1.pth", weights_only=True)  # whole
    _train(work, epochs=3, resume=True)
    assert sorted(p.name for p in work.glob("*.pth")) == ["epoch_3.pth"]


def test_resume_falls_back_to_the_newest_checkpoint_that_loads(tmp_path, trained, caplog):
    work = tmp_path / "run"
    work.mkdir()
    good = (trained / "epoch_2.pth").read_bytes()
    (work / "epoch_1.pth").write_bytes(good)
    (work / "epoch_2.pth").write_bytes(good[: len(good) // 3])  # truncated by a kill
    (work / "epoch_3.pth").write_bytes(b"")  # zero bytes
    (work / "last_checkpoint").write_text(str(work / "epoch_3.pth"))
    with caplog.at_level(logging.WARNING, logger="vlprompt"):
        assert find_resume_checkpoint(work) == str(work / "epoch_1.pth")
    assert "epoch_3.pth" in caplog.text and "resuming from" in caplog.text and "epoch_1.pth" in caplog.text
    (work / "last_checkpoint").write_text("")  # empty pointer
    assert find_resume_checkpoint(work) == str(work / "epoch_1.pth")
    (work / "epoch_1.pth").unlink()
    with pytest.raises(CheckpointError, match=r"no checkpoint in .* loads: .*epoch_3.pth.*epoch_2.pth"):
        find_resume_checkpoint(work)
    assert find_resume_checkpoint(tmp_path / "empty") is None


# ---------------------------------------------------------------------------- 3. diverged parameters


def test_diverged_parameters_are_never_saved(tmp_path, monkeypatch):
    """The context diverges to inf in epoch 2 while the step's loss was still finite (as with lr=inf,
    one step per epoch): epoch_2.pth is not written, epoch_1.pth is kept."""
    from mmengine.hooks import Hook

    class Diverge(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if runner.epoch == 1:  # the second epoch
                with torch.no_grad():
                    runner.model.learner.ctx[:2] = float("inf")

    import vlprompt.engine as engine  # tools/train.py takes build_runner from here when main() runs

    original = engine.build_runner

    def build(cfg, launcher="none"):
        runner = original(cfg, launcher)
        runner.register_hook(Diverge())
        return runner

    monkeypatch.setattr(engine, "build_runner", build)
    work = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"the learned parameter ctx holds \d+ of \d+ non-finite values "
                                                 r"after epoch 2 \(training step 2\); epoch_2.pth is not written"):
        _train(work, "train_dataloader.batch_size=64", epochs=3)
    assert sorted(p.name for p in work.glob("*.pth")) == ["epoch_1.pth"]
    assert Path((work / "last_checkpoint").read_text()) == work / "epoch_1.pth"
    assert torch.isfinite(read_learned(work / "epoch_1.pth")[0]["ctx"]).all()
    assert not (work / "learned.safetensors").exists()


def test_an_infinite_learning_rate_is_refused_before_training():
    with pytest.raises(ValueError, match="optim_wrapper.optimizer.lr=inf: a learning rate must be positive and finite"):
        load_config(CONFIG, options={"optim_wrapper.optimizer.lr": float("inf")})


# ---------------------------------------------------------------------------- 5. weights-only everywhere


class _Gadget:
    def __reduce__(self):
        return (os.system, ("touch gadget_ran",))


@pytest.mark.parametrize("scheme", ["", "http://example.invalid/"])
def test_load_from_never_unpickles_code_even_when_torch_is_told_to(tmp_path, monkeypatch, scheme):
    from mmengine.runner.checkpoint import CheckpointLoader

    import vlprompt.engine  # noqa: F401  installs the loaders

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    hostile = tmp_path / "hostile.pth"
    torch.save({"state_dict": {}, "x": _Gadget()}, hostile)
    monkeypatch.setattr("mmengine.fileio.get", lambda name, *a, **k: hostile.read_bytes())
    name = str(hostile) if not scheme else scheme + "hostile.pth"
    with pytest.raises(CheckpointError) as err:
        CheckpointLoader.load_checkpoint(name)
    assert "refusing to load" in str(err.value) and name in str(err.value)
    assert "weights_only=False" not in str(err.value)
    assert not (tmp_path / "gadget_ran").exists()


def test_model_zoo_schemes_are_refused():
    from mmengine.runner.checkpoint import CheckpointLoader

    import vlprompt.engine  # noqa: F401

    for name in ("open-mmlab://resnet50", "torchvision://resnet50", "pavi://x/y.pth", "mmcls://vit"):
        with pytest.raises(CheckpointError, match="does not load model-zoo schemes"):
            CheckpointLoader.load_checkpoint(name)


def test_resume_of_a_hostile_file_names_it_without_advice_to_lower_the_guard(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hostile = tmp_path / "epoch_9.pth"
    with open(hostile, "wb") as f:
        pickle.dump(_Gadget(), f)  # a legacy (non-zip) pickle
    argv = [CONFIG, "--work-dir", str(tmp_path / "run"), "--resume", str(hostile), "--no-test", "--cfg-options", *FAST]
    with pytest.raises(CheckpointError) as err:
        train_tool.main(argv)
    assert str(hostile) in str(err.value) and "weights_only=False" not in str(err.value)
    assert not (tmp_path / "gadget_ran").exists()


# ---------------------------------------------------------------------------- 10. messages that name the key


@pytest.mark.parametrize("option, message", [
    ({"train_dataloader.batch_size": "abc"}, r"train_dataloader.batch_size='abc': .* has a number there"),
    ({"train_cfg.max_epochs": 0}, r"train_cfg.max_epochs=0: max_epochs must be a whole number >= 1"),
    ({"train_dataloader.batch_size": 2.5}, r"batch_size=2.5: batch_size must be a whole number"),
    ({"optim_wrapper.optimizer.lr": -1.0}, r"optim_wrapper.optimizer.lr=-1.0: a learning rate must be positive"),
    ({"model.learner.ctx_init": 3}, r"model.learner.ctx_init=3: .* has a string there"),
])
def test_cfg_options_of_the_wrong_kind_name_the_key(option, message):
    with pytest.raises(ValueError, match=message):
        load_config(CONFIG, options=option)


@pytest.mark.parametrize("option, message", [
    ("randomnes.seed", r"has no key 'randomnes' \(closest: randomness\); keys that may be added at the top: load_from"),
    ("optim_wrapper.optimizer.lrr", r"optim_wrapper.optimizer has no key 'lrr', and SGD takes no argument 'lrr' "
                                    r"\(closest: lr\)"),
    ("model.learner.n_ctxx", r"model.learner has no key 'n_ctxx', and CoOp takes no argument 'n_ctxx'"),
    ("model.backbone.bogus", r"build_clip takes no argument 'bogus'"),
])
def test_cfg_option_keys_nothing_reads_are_refused(option, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIG, options={option: 2})


def test_cfg_option_keys_that_something_reads_may_be_added():
    cfg = load_config(CONFIG, options={"optim_wrapper.optimizer.nesterov": True, "model.backbone.quick_gelu": True,
                                       "train_dataloader.dataset.transform": "test", "load_from": "x.pth",
                                       "model.learner.class_specific": True})
    assert cfg.optim_wrapper.optimizer.nesterov is True and cfg.load_from == "x.pth"
    assert cfg.work_dir == "work_dirs/coop/toy_shapes"  # <method>/<config>: methods never share a work dir


def test_cfg_options_that_fit_are_accepted():
    cfg = load_config(CONFIG, options={"train_dataloader.batch_size": 4, "model.backbone.pretrained": None,
                                       "optim_wrapper.optimizer.lr": 1, "data_root": "/data"})
    assert cfg.train_dataloader.batch_size == 4 and cfg.optim_wrapper.optimizer.lr == 1


@pytest.fixture(scope="module")
def classifier(learned):
    return vlprompt.load_prompted_clip(learned)


def test_classify_refuses_what_is_not_a_class_list_or_an_image(classifier):
    images = torch.randn(2, 3, 32, 32)
    with pytest.raises(TypeError, match=r"not the string 'red circle' \(for one class: \['red circle'\]\)"):
        classifier.classify(images, class_names="red circle")
    with pytest.raises(ValueError, match=r"class_names\[0\] and class_names\[1\] are both 'a'"):
        classifier.classify(images, ["a", "a"])
    with pytest.raises(TypeError, match=r"a torch.uint8 tensor is not a preprocessed image batch"):
        classifier.classify(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), ["a", "b"])
    with pytest.raises(ValueError, match=r"expected a float tensor of shape \(B, 3, 32, 32\) for test-tiny, "
                                         r"got \(2, 32, 32, 3\)"):
        classifier.classify(torch.randn(2, 32, 32, 3), ["a", "b"])
    with pytest.raises(TypeError, match=r"images\[1\]: expected a PIL image, a numpy array or a path, got int"):
        classifier.classify([Image.new("RGB", (8, 8)), 3], ["a", "b"])


def test_classify_accepts_numpy_arrays_and_paths_like_pil_images(classifier, tmp_path):
    array = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    names = ["red circle", "blue star"]
    from_pil = classifier.classify(Image.fromarray(array), names)
    assert torch.equal(classifier.classify(array, names), from_pil)
    assert torch.equal(classifier.classify(tmp_path / "a.png", names), from_pil)
    assert classifier.classify([array, str(tmp_path / "a.png")], names).shape == (2, 2)


@pytest.mark.parametrize("resume", [True, False])
def test_a_work_dir_of_another_run_is_refused_before_anything_loads(tmp_path, trained, resume):
    import shutil

    work = tmp_path / "run"
    shutil.copytree(trained, work)
    if resume:  # resuming: the checkpoint's learner is compared with the config's
        match = (rf"{work} holds checkpoints of another run: .*epoch_2.pth is learner 'coop' n_ctx=4 .* on backbone "
                 r"'test-tiny' \(config .*toy_shapes.py\), but .*toy_shapes.py asks for learner 'coop' n_ctx=2")
        with pytest.raises(CheckpointError, match=match):
            _train(work, "model.learner.n_ctx=2", resume=resume)
    else:  # a fresh run: the run record's settings are
        with pytest.raises(CheckpointError, match=rf"{work} holds a run of coop/toy_shapes with other settings "
                                                  r"\(model.learner.n_ctx: 4 -> 2\)"):
            _train(work, "model.learner.n_ctx=2", resume=resume)
    assert sorted(p.name for p in work.glob("*.pth")) == ["epoch_2.pth"]  # nothing was touched
    assert json.loads((work / "run.json").read_text())["settings"]["model"]["learner"]["n_ctx"] == 4


def test_a_work_dir_written_before_run_records_is_checked_by_its_checkpoints(tmp_path, trained):
    """A work dir without run.json (vlprompt before it): its results and checkpoints say which run it holds."""
    import shutil

    work = tmp_path / "run"
    shutil.copytree(trained, work)
    (work / "run.json").unlink()
    with pytest.raises(CheckpointError, match=r"holds checkpoints of another run: .* asks for learner 'coop' n_ctx=2"):
        _train(work, "model.learner.n_ctx=2", resume=True)
    with pytest.raises(CheckpointError, match=rf"{work} holds a finished run of coop/toy_shapes .*--overwrite"):
        _train(work, "model.learner.n_ctx=2")
    assert sorted(p.name for p in work.glob("*.pth")) == ["epoch_2.pth"] and not (work / "run.json").exists()


def test_a_checkpoint_of_another_backbone_names_both(tmp_path, learned):
    from vlprompt.backbones import build_clip
    from vlprompt.engine.checkpoint import load_learned_into
    from vlprompt.learners import build_learner

    with pytest.raises(CheckpointError, match=r"trained on backbone 'test-tiny', not 'toy'"):
        vlprompt.load_prompted_clip(learned, backbone="toy")
    # tools/test.py: a config of another backbone than the checkpoint's
    other = build_learner("coop", build_clip("toy"), ["a", "b"], n_ctx=4, ctx_init="a photo of a")
    with pytest.raises(CheckpointError, match=r"ctx has shape \(4, \d+\) in the checkpoint but \(4, 128\) for "
                                              r"backbone 'toy' \(the checkpoint was trained on backbone 'test-tiny'"):
        load_learned_into(other, learned)
    # metadata edited to name another backbone: the prompts no longer fit it
    path = _learned_with_meta(tmp_path, learned, lambda m: m["backbone"].update(name="toy", pretrained=None))
    with pytest.raises(CheckpointError, match=r"do not fit the backbone its metadata names"):
        load_learner(path)
