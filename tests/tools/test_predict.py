"""tools/predict.py and PromptedClassifier.predict: a trained prompt (or zero-shot CLIP) on your own images.

The checkpoints are ``learned.safetensors`` files written without training on the random-init ``test-tiny``
CLIP (32 px, :func:`helpers.write_learned`); the images are small PNGs made here.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_learned
from PIL import Image
from tool_loader import load_tool

import vlprompt
from vlprompt import zeroshot
from vlprompt.cli import run_tool
from vlprompt.zeroshot import FixedClassesError, ImageReadError, class_set_problem

predict = load_tool("predict")

CLASSES = ["red circle", "blue star", "sea lion"]


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


def _load(path: Path) -> zeroshot.PromptedClassifier:
    """The classifier the tool builds from ``path``: ``test-tiny`` has random weights, drawn from the seeded
    generator in the same order by every load (as :func:`_main` seeds it for the tool)."""
    torch.manual_seed(0)
    return vlprompt.load_prompted_clip(path)


def _main(argv: list[str]) -> list[dict]:
    torch.manual_seed(0)
    return predict.main(argv)


def one_line_exit(argv: list[str], capsys) -> str:
    """``tools/predict.py argv`` as the shell runs it: exit status 2 and one ``error:`` line, returned."""
    with pytest.raises(SystemExit) as stop:
        run_tool(lambda: predict.main(argv), argv)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Checkpoints (shared-context CoOp, class-specific CoOp) and 5 images: 3 in a folder tree, 2 beside it."""
    root = tmp_path_factory.mktemp("predict")
    images = root / "images"
    tree = [_png(images / "b.png", 0), _png(images / "a" / "z.png", 1), _png(images / "a" / "deep" / "y.jpg", 2)]
    (images / "notes.txt").write_text("not an image\n")  # skipped in a folder: not an image extension
    _png(images / ".hidden.png", 9)  # hidden files are skipped
    loose = [_png(root / "loose" / "c.png", 3), _png(root / "loose" / "d.png", 4)]
    return {
        "root": root, "images": images, "tree": tree, "loose": loose,
        "coop": write_learned(root / "coop" / "learned.safetensors", n_ctx=4),
        "csc": write_learned(root / "csc" / "learned.safetensors", n_ctx=4, ctx_init="", class_specific=True),
    }


def _sorted_tree(files) -> list[str]:
    """The folder's images in the order the tool lists them: sorted by path, recursively."""
    images = files["images"]
    return [str(images / "a" / "deep" / "y.jpg"), str(images / "a" / "z.png"), str(images / "b.png")]


# ------------------------------------------------------------------------------------------ the library
def test_predict_equals_classify_of_the_loaded_checkpoint(files):
    clf = vlprompt.load_prompted_clip(files["coop"])
    assert clf.own_class_names == CLASSES
    paths = [str(p) for p in files["tree"] + files["loose"]]
    got = clf.predict(paths, top_k=3, batch_size=2)
    probs = clf.classify(paths, CLASSES)
    assert [r["image"] for r in got] == paths
    for row, p in zip(got, probs, strict=True):
        order = p.argsort(descending=True).tolist()
        assert [name for name, _ in row["top"]] == [CLASSES[i] for i in order]
        assert [prob for _, prob in row["top"]] == pytest.approx(p[order].tolist(), abs=1e-6)


def test_predict_reads_images_batch_by_batch(files, monkeypatch):
    clf = vlprompt.load_prompted_clip(files["coop"])
    events = []
    load = zeroshot.load_image
    monkeypatch.setattr(zeroshot, "load_image", lambda path: events.append("read") or load(path))
    forward = clf.learner.forward
    monkeypatch.setattr(clf.learner, "forward", lambda images: events.append(f"classify {len(images)}")
                        or forward(images))
    paths = (str(p) for p in files["tree"] + files["loose"])  # any iterable, here a generator
    assert len(clf.predict(paths, batch_size=2)) == 5
    assert events == ["read", "read", "classify 2", "read", "read", "classify 2", "read", "classify 1"]


def test_predict_takes_pil_images_and_clips_top_k_to_the_classes(files):
    clf = vlprompt.load_prompted_clip(files["coop"])
    pil = [Image.open(p).convert("RGB") for p in files["loose"]]
    got = clf.predict(pil, ["dog", "cat"], top_k=5)
    assert [r["image"] for r in got] == [0, 1]  # in-memory images are named by their index
    probs = clf.classify(pil, ["dog", "cat"])
    for row, p in zip(got, probs, strict=True):
        assert len(row["top"]) == 2 and sum(prob for _, prob in row["top"]) == pytest.approx(1.0, abs=1e-5)
        assert row["top"][0] == [["dog", "cat"][int(p.argmax())], pytest.approx(float(p.max()), abs=1e-6)]
    with pytest.raises(ValueError, match="top_k must be a whole number >= 1"):
        clf.predict(pil, top_k=0)
    with pytest.raises(ValueError, match="batch_size must be"):
        clf.predict(pil, batch_size=0)


def test_an_unreadable_image_is_named(files, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    clf = vlprompt.load_prompted_clip(files["coop"])
    with pytest.raises(ImageReadError, match=f"cannot read image {bad}"):
        clf.predict([str(files["loose"][0]), bad])
    with pytest.raises(ImageReadError, match="missing.png"):
        clf.predict([tmp_path / "missing.png"])


def test_shared_context_coop_classifies_new_class_names(files):
    clf = vlprompt.load_prompted_clip(files["coop"])
    names = ["dog", "cat", "bird", "fish"]
    paths = [str(p) for p in files["loose"]]
    got = clf.predict(paths, names, top_k=1)
    probs = clf.classify(paths, names)
    assert [r["top"][0][0] for r in got] == [names[int(i)] for i in probs.argmax(-1)]
    assert clf.predict(paths, top_k=1)[0]["top"][0][0] in CLASSES  # back to its own classes


def test_class_specific_coop_refuses_other_classes_with_the_reason(files):
    clf = vlprompt.load_prompted_clip(files["csc"])
    paths = [str(p) for p in files["loose"]]
    assert [len(r["top"]) for r in clf.predict(paths)] == [3, 3]  # its own classes, in their order
    for names in (["dog", "cat", "bird"], ["dog", "cat"], CLASSES[::-1]):  # a permutation would mislabel too
        with pytest.raises(FixedClassesError, match=r"CoOp cannot classify other classes than its trained ones: "
                                                    r"CoOp with class-specific contexts learned one context per "
                                                    r"trained class \(3 classes, in their order\)"):
            clf.predict(paths, names)
        with pytest.raises(ValueError, match="one context per trained class"):  # classify/logits too
            clf.classify(paths, names)
    assert clf.learner.class_names == CLASSES
    assert torch.allclose(clf.classify(paths, CLASSES).sum(-1), torch.ones(2), atol=1e-5)


def test_the_learner_is_asked_when_it_can_say(files):
    """Once PromptLearner has ``class_set_problem`` (the proposed general ability), its answer decides."""
    clf = vlprompt.load_prompted_clip(files["coop"])
    clf.learner.class_set_problem = lambda names: None if names == CLASSES else "its prompts are per class"
    assert class_set_problem(clf.learner, CLASSES) is None
    with pytest.raises(FixedClassesError, match="CoOp cannot classify .*: its prompts are per class"):
        clf.predict([str(files["loose"][0])], ["dog", "cat"])


def test_described_coop_takes_described_classes_and_stays_usable_after_a_refusal(files, tmp_path):
    text = {"red circle": ["a round red shape"], "blue star": ["a pointed blue shape"], "sea lion": ["a sea mammal"],
            "dog": ["a pet that barks"]}
    clf = vlprompt.load_prompted_clip(write_learned(tmp_path / "learned.safetensors", n_ctx=4, descriptions_text=text))
    image = [str(files["loose"][0])]
    assert len(clf.predict(image, ["dog", "sea lion"])[0]["top"]) == 2  # classes its recorded descriptions cover
    with pytest.raises(ValueError, match="describes none of the 2 classes"):
        clf.predict(image, ["cat", "bird"])
    assert clf.learner.class_names == ["dog", "sea lion"]  # switched back: the next call sees what it set
    assert clf.predict(image) == clf.predict(image, CLASSES)


def test_zero_shot_from_an_architecture_name_needs_class_names():
    with pytest.warns(zeroshot.RandomWeightsWarning):
        clf = vlprompt.load_prompted_clip("test-tiny")
    assert clf.own_class_names is None
    with pytest.raises(ValueError, match="no class names of its own"):
        clf.predict([Image.new("RGB", (32, 32))])
    assert clf.predict([Image.new("RGB", (32, 32))], ["a", "b"])[0]["image"] == 0


# ------------------------------------------------------------------------------------------ the tool
def test_the_tool_predicts_what_the_classifier_does(files, tmp_path, capsys):
    out = tmp_path / "out.json"
    results = _main([str(files["coop"].parent), str(files["images"]), *map(str, files["loose"]),
                            "--output", str(out), "--top-k", "3", "--batch-size", "2"])
    written = json.loads(out.read_text())
    assert written == results
    paths = _sorted_tree(files) + [str(p) for p in files["loose"]]
    assert [r["image"] for r in written] == paths
    probs = _load(files["coop"]).classify(paths, CLASSES)
    for row, p in zip(written, probs, strict=True):
        order = p.argsort(descending=True).tolist()
        assert [name for name, _ in row["top"]] == [CLASSES[i] for i in order]
        assert [prob for _, prob in row["top"]] == pytest.approx(p[order].tolist(), abs=1e-6)
    assert capsys.readouterr().out.strip() == f"5 images, the top 3 of 3 classes each: {out}"


def test_the_csv_has_top_k_rows_per_image_sorted_by_probability(files, tmp_path, capsys):
    out = tmp_path / "out.csv"
    _main([str(files["coop"]), str(files["images"]), "--top-k", "2", "--output", str(out)])
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image", "rank", "class", "probability"]
    by_image: dict[str, list[dict]] = {}
    for row in rows:
        by_image.setdefault(row["image"], []).append(row)
    assert list(by_image) == _sorted_tree(files)
    probs = _load(files["coop"]).classify(list(by_image), CLASSES)
    for (image, ranked), p in zip(by_image.items(), probs, strict=True):
        assert [r["rank"] for r in ranked] == ["1", "2"], image
        values = [float(r["probability"]) for r in ranked]
        assert values == sorted(values, reverse=True)
        assert ranked[0]["class"] == CLASSES[int(p.argmax())]
        assert values[0] == pytest.approx(float(p.max()), rel=1e-5)


def test_without_output_a_table_of_the_top_class_is_printed(files, capsys):
    results = predict.main([str(files["coop"]), *map(str, files["loose"])])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[:2] == ["| image | class | probability |", "|---|---|---|"]
    assert lines[2:] == [f"| {r['image']} | {r['top'][0][0]} | {r['top'][0][1]:.3f} |" for r in results]


def test_lists_resolve_paths_from_their_own_folder(files, tmp_path, monkeypatch, capsys):
    root = files["root"]
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "some.txt").write_text(f"../../{root.name}/loose/c.png\n\n{files['loose'][1]}\n")  # relative, absolute
    rel = Path("..") / ".." / root.name / "images"
    (lists / "more.csv").write_text(f"path,label\n{rel / 'b.png'},x\n{rel / 'a' / 'z.png'},y\n")
    monkeypatch.chdir(root)  # relative to the list, not to the working folder
    some, more = str(lists / "some.txt"), str(lists / "more.csv")
    results = predict.main([str(files["coop"]), some, more, some])
    got = [Path(r["image"]).resolve() for r in results]
    want = [*files["loose"], files["images"] / "b.png", files["images"] / "a" / "z.png"]  # each image once
    assert got == [p.resolve() for p in want]


def test_new_classes_from_a_file_for_shared_context_coop(files, tmp_path, capsys):
    names = tmp_path / "classes.txt"
    names.write_text("dog\ncat\n\nbird\n")
    results = _main([str(files["coop"]), str(files["loose"][0]), "--classes", str(names), "--top-k", "1"])
    p = _load(files["coop"]).classify([str(files["loose"][0])], ["dog", "cat", "bird"])[0]
    assert results[0]["top"] == [[["dog", "cat", "bird"][int(p.argmax())], pytest.approx(float(p.max()), abs=1e-6)]]
    results = predict.main([str(files["coop"]), str(files["loose"][0]), "--classes", "dog, cat"])
    assert sorted(name for name, _ in results[0]["top"]) == ["cat", "dog"]


def test_class_specific_coop_refuses_other_classes_in_one_line(files, capsys):
    line = one_line_exit([str(files["csc"]), str(files["loose"][0]), "--classes", "dog,cat"], capsys)
    assert line == ("error: --classes dog,cat: CoOp cannot classify other classes than its trained ones: CoOp with "
                    "class-specific contexts learned one context per trained class (3 classes, in their order); "
                    "leave --classes out to classify with them")


def test_zero_shot_from_an_architecture_name(files, monkeypatch, capsys):
    built = []
    load = zeroshot.load_prompted_clip
    monkeypatch.setattr(zeroshot, "load_prompted_clip", lambda *a, **k: built.append((a, k)) or load(*a, **k))
    results = predict.main(["toy", *map(str, files["loose"]), "--classes", "circle,star", "--device", "cpu"])
    assert built == [(("toy",), {"device": "cpu"})]
    probs = vlprompt.load_prompted_clip("toy").classify([str(p) for p in files["loose"]], ["circle", "star"])
    assert [r["top"][0][1] for r in results] == pytest.approx(probs.max(-1).values.tolist(), abs=1e-6)
    line = one_line_exit(["toy", str(files["loose"][0])], capsys)
    assert line == "error: zero-shot CLIP (toy) has no classes of its own: give --classes"


@pytest.mark.parametrize("case", ["checkpoint", "work dir", "architecture", "image", "folder", "list", "list entry",
                                  "class file", "empty classes", "duplicate classes", "same classes", "output"])
def test_bad_input_is_one_line_naming_it_before_any_model_is_built(files, tmp_path, monkeypatch, capsys, case):
    monkeypatch.setattr(zeroshot, "load_prompted_clip", lambda *a, **k: pytest.fail("a model was built"))
    ckpt, image = str(files["coop"]), str(files["loose"][0])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no images here\n")
    (tmp_path / "none.txt").write_text("\n")
    (tmp_path / "gone.txt").write_text(f"{image}\nmissing.png\n")
    (tmp_path / "blank.txt").write_text("\n  \n")
    (tmp_path / "twice.txt").write_text("dog\ncat\ndog\n")
    argv, named = {
        "checkpoint": ([str(tmp_path / "nope.safetensors"), image], f"checkpoint not found: {tmp_path}/nope"),
        "work dir": ([str(tmp_path / "empty"), image], f"checkpoint folder {tmp_path}/empty holds no learned"),
        "architecture": (["nope", image], "checkpoint nope: no such file or folder, and not a CLIP architecture"),
        "image": ([ckpt, str(tmp_path / "x.png")], f"no such image, folder or list: {tmp_path}/x.png"),
        "folder": ([ckpt, str(tmp_path / "empty")], f"no images (.jpg, .jpeg, .png, .bmp, .gif, .webp, .tif, .tiff, "
                                                    f".ppm) in folder {tmp_path}/empty or below it"),
        "list": ([ckpt, str(tmp_path / "none.txt")], f"{tmp_path}/none.txt: the list names no images"),
        "list entry": ([ckpt, str(tmp_path / "gone.txt")], f"{tmp_path}/gone.txt line 2: no such image 'missing.png'"),
        "class file": ([ckpt, image, "--classes", str(tmp_path / "c.txt")], f"--classes {tmp_path}/c.txt: no such "
                                                                            f"file"),
        "empty classes": ([ckpt, image, "--classes", str(tmp_path / "blank.txt")],
                          f"--classes {tmp_path}/blank.txt: the file lists no class names"),
        "duplicate classes": ([ckpt, image, "--classes", str(tmp_path / "twice.txt")],
                              f"--classes {tmp_path}/twice.txt: 'dog' (line 3) is listed twice"),
        "same classes": ([ckpt, image, "--classes", "Sea_lion,sea lion"],
                         "--classes Sea_lion,sea lion: 'sea lion' (name 2) and 'Sea_lion' (name 1) are the same class"),
        "output": ([ckpt, image, "--output", str(tmp_path / "out.txt")], f"--output {tmp_path}/out.txt: the suffix "
                                                                         f"says the format: .csv or .json"),
    }[case]
    assert one_line_exit(argv, capsys).startswith(f"error: {named}")


def test_an_unreadable_image_stops_the_tool_in_one_line_naming_it(files, tmp_path, capsys):
    folder = tmp_path / "imgs"
    _png(folder / "a.png", 0)
    (folder / "b.png").write_bytes(b"GIF89a broken")
    out = tmp_path / "out.csv"
    line = one_line_exit([str(files["coop"]), str(folder), "--output", str(out)], capsys)
    assert line.startswith(f"error: cannot read image {folder / 'b.png'} (")
    assert not out.exists()  # nothing half-written


def test_a_device_this_machine_lacks_is_one_line(files, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    line = one_line_exit([str(files["coop"]), str(files["loose"][0]), "--device", "cuda"], capsys)
    assert line == "error: --device cuda: this machine has no CUDA device (use --device cpu)"
