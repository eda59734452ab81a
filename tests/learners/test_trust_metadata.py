"""Trust, second pass (issue 30), item 6 and item 10 (b, c): what a checkpoint's metadata may make loading do.

* A checkpoint carries the descriptions it was trained with as their text (``learner.knowledge_text`` /
  ``learner.descriptions_text``, written at save time); a description source it names (a path, a
  ``dict(file=...)``, a ``dict(dataset=...)``) is never read when loading: with the text beside it the source
  is only a record, without it the file is refused naming the key.
* Sizes from metadata are bounded before anything is allocated: by the file's own tensors, and by what the
  backbone allows (text context vectors fit the 77-token context, image prompt tokens at most the image
  tower's sequence).
* What was built is what is recorded: ``n_ctx=80`` with ``ctx_init`` builds 4 vectors and records 4.
* An RLCF teacher with random weights is warned of, naming it.
"""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch
from helpers import write_learned
from safetensors import safe_open
from safetensors.torch import save_file

from vlprompt.backbones import CheckpointError, build_clip
from vlprompt.datasets import knowledge as knowledge_mod
from vlprompt.learned import load_learner, read_learned
from vlprompt.learners import build_learner

DESCRIPTIONS = {
    "red circle": "A red circle is a round shape painted bright red.",
    "blue star": "A blue star is a pointed shape with five arms in blue.",
    "sea lion": "A sea lion is a marine mammal with flippers that barks loudly.",
}
NAMES = list(DESCRIPTIONS)
#: the learners that take a description source, and the key that names it
DESCRIBED = [("kapt", "knowledge"), ("zsclip", "descriptions"), ("coop", "descriptions")]


def edit_meta(path, edit) -> None:
    """Rewrite a learned file's ``vlprompt`` metadata with ``edit(meta)`` applied, keeping its tensors."""
    with safe_open(str(path), framework="pt") as f:
        tensors, raw = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118 - safe_open
    meta = json.loads(raw["vlprompt"])
    edit(meta)
    save_file(tensors, str(path), metadata={**raw, "vlprompt": json.dumps(meta)})


@pytest.fixture
def knowledge_file(tmp_path):
    path = tmp_path / "knowledge.json"
    path.write_text(json.dumps(DESCRIPTIONS))
    return path


@pytest.fixture
def no_reads(monkeypatch):
    """Any read of a description source fails the test (and so never blocks on a FIFO or fills memory)."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a description source was read: {args}")

    monkeypatch.setattr(knowledge_mod, "load_descriptions", refuse)
    monkeypatch.setattr(knowledge_mod, "dataset_descriptions", refuse)


@pytest.fixture
def small_allocations(monkeypatch):
    """A tensor of more than 10 M elements fails the test: sizes are checked before anything is allocated."""
    limit = 10_000_000

    def guard(real):
        def make(*size, **kwargs):
            dims = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
            count = 1
            for d in dims:
                count *= int(d)
            if count > limit:
                raise AssertionError(f"allocation of {tuple(dims)} ({count} elements)")
            return real(*size, **kwargs)
        return make

    for name in ("randn", "empty", "zeros"):
        monkeypatch.setattr(torch, name, guard(getattr(torch, name)))


def _learner_kwargs(learner: str, key: str, source) -> dict:
    kwargs = {key: source}
    if learner == "kapt":
        kwargs.update(extract="clause", w_text=0.0)
    if learner == "coop":
        kwargs.update(n_ctx=4, ctx_init="a photo of a")
    return kwargs


def _described_learned(tmp_path, learner: str, key: str, source) -> os.PathLike:
    return write_learned(tmp_path / f"{learner}.safetensors", learner, NAMES, **_learner_kwargs(learner, key, source))


# ------------------------------------------------------------------------------------------ descriptions
@pytest.mark.parametrize("learner, key", DESCRIBED)
def test_a_checkpoint_carries_its_descriptions_text_and_loads_without_the_file(tmp_path, knowledge_file, learner,
                                                                               key):
    """train -> save -> load: the text is in the metadata, so the file it came from may go."""
    path = _described_learned(tmp_path, learner, key, str(knowledge_file))
    _, meta = read_learned(path)
    assert meta["learner"][key] == str(knowledge_file)  # where the text came from, for the record
    assert meta["learner"][f"{key}_text"] == {k: [v] for k, v in DESCRIPTIONS.items()}
    original = build_learner(learner, build_clip("test-tiny"), NAMES, **_learner_kwargs(learner, key,
                                                                                           str(knowledge_file)))
    knowledge_file.unlink()
    loaded = load_learner(path)
    assert loaded.hparams() == original.hparams()
    if learner == "kapt":
        assert loaded.class_knowledge == original.class_knowledge
    assert torch.equal(loaded.class_token_ids, original.class_token_ids)


@pytest.mark.parametrize("learner, key", DESCRIBED)
@pytest.mark.parametrize("source", ["/etc/passwd", "/dev/zero", "fifo", {"file": "/etc/passwd"},
                                    {"dataset": "toy-shapes"}], ids=["passwd", "zero", "fifo", "file", "dataset"])
def test_a_description_source_in_the_metadata_is_refused_never_read(tmp_path, no_reads, learner, key, source):
    from vlprompt import load_prompted_clip

    path = _described_learned(tmp_path, learner, key, {"descriptions": DESCRIPTIONS})
    if source == "fifo":
        source = str(tmp_path / "pipe")
        os.mkfifo(source)

    def edit(meta):
        meta["learner"][key] = source
        meta["learner"].pop(f"{key}_text", None)  # an older checkpoint: a source, no text

    edit_meta(path, edit)
    shown = repr(source).replace("{", r"\{").replace("}", r"\}").replace("[", r"\[")
    message = rf"{path}: metadata key 'learner.{key}' = {shown} names a description source.*re-save"
    with pytest.raises(CheckpointError, match=message):
        load_learner(path)
    with pytest.raises(CheckpointError, match=message):
        load_prompted_clip(path)


@pytest.mark.parametrize("learner, key", DESCRIBED)
def test_the_recorded_text_is_used_and_a_recorded_path_is_only_a_record(tmp_path, no_reads, learner, key):
    path = _described_learned(tmp_path, learner, key, {"descriptions": DESCRIPTIONS})
    edit_meta(path, lambda meta: meta["learner"].update({key: "/etc/passwd"}))
    loaded = load_learner(path)  # never reads /etc/passwd (no_reads)
    assert loaded.hparams()[f"{key}_text"] == {k: [v] for k, v in DESCRIPTIONS.items()}


@pytest.mark.parametrize("text, why", [
    ("/etc/passwd", "is not a mapping"),
    ({"red circle": 3}, "holds 'red circle': int, not a sentence"),
    ([["red circle", "round"]], "is not a mapping"),
])
def test_recorded_text_that_is_not_descriptions_is_refused(tmp_path, no_reads, text, why):
    path = _described_learned(tmp_path, "kapt", "knowledge", {"descriptions": DESCRIPTIONS})
    edit_meta(path, lambda meta: meta["learner"].update({"knowledge_text": text}))
    with pytest.raises(CheckpointError, match=rf"{path}: metadata key 'learner.knowledge_text'.*{why}"):
        load_learner(path)


def test_tta_with_such_a_checkpoint_stops_in_one_line_naming_file_and_key(tmp_path, no_reads, capsys):
    from tool_loader import load_tool

    from vlprompt.cli import run_tool

    path = _described_learned(tmp_path, "coop", "descriptions", {"descriptions": DESCRIPTIONS})
    edit_meta(path, lambda meta: (meta["learner"].update(descriptions="/etc/passwd"),
                                  meta["learner"].pop("descriptions_text")))
    argv = ["configs/tpt/toy_shapes_noise.py", "--checkpoint", str(path), "--limit", "1", "--work-dir",
            str(tmp_path / "run")]
    with pytest.raises(SystemExit) as stop:
        run_tool(lambda: load_tool("tta").main(argv), argv)
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {path}: metadata key 'learner.descriptions' = '/etc/passwd' names a description "
                           "source")
    assert "root:" not in line  # nothing of the file is echoed


# ------------------------------------------------------------------------------------------ sizes
@pytest.mark.parametrize("learner, key, value, extra", [
    ("coop", "n_ctx", 100_000_000, {"ctx_init": ""}),
    ("coop", "n_ctx", 100_000, {"ctx_init": ""}),
    ("coop", "n_ctx", -3, {"ctx_init": ""}),
    ("vpt", "n_ctx", 100_000_000, {}),
    ("ivlp", "n_ctx_vision", 100_000_000, {}),
    ("mupt", "project_dim", 1_000_000, {}),
], ids=["coop-1e8", "coop-1e5", "coop-negative", "vpt", "ivlp-vision", "mupt-project"])
def test_sizes_in_the_metadata_are_refused_before_anything_is_allocated(tmp_path, small_allocations, learner, key,
                                                                       value, extra):
    path = write_learned(tmp_path / "learned.safetensors", learner, NAMES)
    edit_meta(path, lambda meta: meta["learner"].update({key: value, **extra}))
    with pytest.raises(CheckpointError, match=rf"{path}: metadata key 'learner.{key}' = {value} "):
        load_learner(path)


@pytest.mark.parametrize("learner, kwargs, message", [
    ("coop", dict(n_ctx=80, ctx_init=""), r"coop: n_ctx=80 context vectors do not fit .*77-token text context "
                                          r"\(at most 74:"),
    ("mupt", dict(n_ctx_text=100), r"mupt: n_ctx_text=100 context vectors do not fit"),
    ("vpt", dict(n_ctx=18), r"vpt: n_ctx=18 image prompt tokens are more than the 17 tokens"),
    ("ivlp", dict(n_ctx_vision=500), r"ivlp: n_ctx_vision=500 image prompt tokens"),
    ("mvpt", dict(n_ctx=10_000_000), r"mvpt: n_ctx=10000000 image prompt tokens"),
    ("coop", dict(n_ctx=0, ctx_init=""), r"coop: n_ctx must be a whole number >= 1"),
])
def test_sizes_beyond_what_the_backbone_allows_are_refused_naming_them(clip, small_allocations, learner, kwargs,
                                                                       message):
    with pytest.raises(ValueError, match=message):
        build_learner(learner, clip, NAMES, **kwargs)


# ------------------------------------------------------------------------------------------ what was built
@pytest.mark.parametrize("learner", ["coop", "cocoop", "kapt"])
def test_the_number_of_context_vectors_built_is_the_one_recorded(tmp_path, clip, learner):
    """``n_ctx=80`` with ``ctx_init``: the phrase's 4 tokens are the context; 4 is recorded (learned file,
    and the model record of results.json), not 80."""
    from vlprompt.adapters import run as tta_run
    from vlprompt.engine import load_config

    extra = {"knowledge": {"descriptions": DESCRIPTIONS}, "w_text": 0.0} if learner == "kapt" else {}
    built = build_learner(learner, clip, NAMES, n_ctx=80, ctx_init="a photo of a", **extra)
    assert built.ctx.shape[-2] == 4 and built.hparams()["n_ctx"] == 4
    path = write_learned(tmp_path / "learned.safetensors", learner, NAMES, n_ctx=80, ctx_init="a photo of a", **extra)
    assert read_learned(path)[1]["learner"]["n_ctx"] == 4
    assert load_learner(path).ctx.shape[-2] == 4
    cfg = load_config("configs/tpt/toy_shapes_noise.py", str(tmp_path / "run"),
                      {"model.backbone.name": "test-tiny", "model.backbone.pretrained": None,
                       "model.learner": {"type": learner, "n_ctx": 80, "ctx_init": "a photo of a", **extra}})
    _, model = tta_run.build_run_learner(cfg, None, NAMES, torch.device("cpu"))
    assert model["learner"]["n_ctx"] == 4  # what results.json records of the model


BUILT_CASES = [
    ("coop", dict(n_ctx=80, ctx_init="a photo of a")),
    ("coop", dict(n_ctx=2, ctx_init="a_photo_of_a", class_specific=True)),
    ("coop", dict(n_ctx=0, ctx_init="a photo of a")),
    ("coop", dict(n_ctx=8, ctx_init="", class_specific=True)),
    ("coop", dict(ctx_init="a photo of a")),
    ("kgcoop", dict(n_ctx=80, ctx_init="a photo of a")),
    ("cocoop", dict(n_ctx=80, ctx_init="a photo of a")),
    ("cocoop", dict(ctx_init="")),
    ("kapt", dict(n_ctx=80, ctx_init="a photo of a", knowledge={"descriptions": DESCRIPTIONS}, w_text=0.0)),
    ("maple", dict(n_ctx=2, ctx_init="a photo of a")),
]


@pytest.mark.parametrize("learner, settings", BUILT_CASES)
def test_settings_as_built_are_what_the_built_learner_records(clip, learner, settings):
    """A config is compared with a run's files through ``settings_as_built``: it must predict, without building,
    every recorded hyper-parameter the config sets (and the context size a phrase gives)."""
    from vlprompt.learners import settings_as_built

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # CoOp warns that a phrase makes the context shared
        recorded = build_learner(learner, clip, NAMES, **settings).hparams()
    predicted = settings_as_built({"type": learner, **settings})
    assert predicted.pop("type") == learner
    assert {k: v for k, v in predicted.items() if k in recorded} == {k: recorded[k] for k in predicted
                                                                      if k in recorded}
    assert "n_ctx" not in recorded or predicted["n_ctx"] == recorded["n_ctx"]


@pytest.mark.slow  # tools/train.py twice: one toy epoch, then --resume to two (about 6 s)
def test_a_run_whose_phrase_sized_its_context_resumes(tmp_path):
    """``n_ctx=80`` with a 4-token ``ctx_init`` records 4 vectors; ``--resume`` with the same config is the same
    run (it was refused as another learner's checkpoints), while a config that builds other vectors is not."""
    from toy_run import train

    work = tmp_path / "run"
    train(work, "model.learner.n_ctx=80", epochs=1, test=False)
    train(work, "model.learner.n_ctx=80", epochs=2, resume=True, test=False)
    assert read_learned(work / "learned.safetensors")[1]["epoch"] == 2
    with pytest.raises(CheckpointError, match=r"holds checkpoints of another run"):
        train(work, "model.learner.n_ctx=2", epochs=3, resume=True, test=False)


def test_a_checkpoint_of_a_phrase_sized_context_fits_its_config_and_no_other(tmp_path):
    """The work-dir check, without training: a checkpoint recording the 4 vectors built for ``n_ctx=80`` fits the
    config asking ``n_ctx=80`` (and ``n_ctx=0``: the phrase's tokens), not one asking 2."""
    from vlprompt.engine.checkpoint import check_work_dir_run

    torch.save({"state_dict": {}, "vlprompt": {"learner": {"type": "coop", "n_ctx": 4, "ctx_init": "a photo of a"},
                                               "backbone": {"name": "toy"}}}, tmp_path / "epoch_1.pth")
    for n_ctx in (80, 0, 4):
        check_work_dir_run(tmp_path, None, {"learner": {"type": "coop", "n_ctx": n_ctx, "ctx_init": "a photo of a"},
                                            "backbone": {"name": "toy"}}, "coop.py")
    with pytest.raises(CheckpointError, match=r"holds checkpoints of another run"):
        check_work_dir_run(tmp_path, None, {"learner": {"type": "coop", "n_ctx": 2, "ctx_init": "a photo of a"},
                                            "backbone": {"name": "toy"}}, "coop.py")


# ------------------------------------------------------------------------------------------ RLCF teacher
def test_an_rlcf_teacher_with_random_weights_is_warned_of_naming_it(clip):
    from vlprompt.adapters import RLCF, default_prompt_learner
    from vlprompt.zeroshot import RandomWeightsWarning

    learner = default_prompt_learner(clip, NAMES)
    with pytest.warns(RandomWeightsWarning, match=r"RLCF teacher test-tiny has random weights .*pretrained"):
        RLCF(learner, build_clip("test-tiny"))
    with pytest.warns(RandomWeightsWarning, match=r"RLCF teacher test-tiny"):
        RLCF(learner, {"name": "test-tiny", "pretrained": None})


def test_an_rlcf_teacher_with_weights_is_not_warned_of(clip):
    import dataclasses

    from vlprompt.adapters import RLCF, default_prompt_learner
    from vlprompt.zeroshot import RandomWeightsWarning

    teacher = build_clip("test-tiny")
    teacher.info = dataclasses.replace(teacher.info, pretrained="/weights/teacher.pt")  # as a weights file records
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomWeightsWarning)
        RLCF(default_prompt_learner(clip, NAMES), teacher)


# ------------------------------------------------------------------------------------------ a real run
@pytest.mark.slow  # tools/train.py: one toy KAPT epoch and its test (about 5 s)
def test_train_save_load_round_trip_carries_the_text_and_the_built_context(tmp_path, monkeypatch):
    """tools/train.py writes the descriptions' text and the 4 vectors it built (asked: n_ctx=80) into
    learned.safetensors and results.json; the file loads without reading any description source."""
    from helpers import ROOT
    from toy_run import FAST, train_tool

    work_dir = tmp_path / "run"
    train_tool.main([str(ROOT / "configs/kapt/toy_shapes.py"), "--work-dir", str(work_dir), "--cfg-options", *FAST,
                     "train_cfg.max_epochs=1", "model.learner.n_ctx=80", "model.learner.ctx_init=a_photo_of_a"])
    _, meta = read_learned(work_dir / "learned.safetensors")
    assert meta["learner"]["n_ctx"] == 4 and meta["learner"]["knowledge"] == {"dataset": "toy-shapes"}
    text = meta["learner"]["knowledge_text"]
    assert len(text) == 40 and all(isinstance(v, list) and v for v in text.values())
    results = json.loads((work_dir / "results.json").read_text())
    assert results["run"]["model"]["learner"]["n_ctx"] == 4

    def refuse(*args, **kwargs):
        raise AssertionError(f"a description source was read: {args}")

    monkeypatch.setattr(knowledge_mod, "load_descriptions", refuse)
    monkeypatch.setattr(knowledge_mod, "dataset_descriptions", refuse)
    learner = load_learner(work_dir / "learned.safetensors")
    assert learner.ctx.shape[0] == 4 and learner.hparams()["knowledge_text"] == text
