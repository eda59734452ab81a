"""Your own images as a dataset (issue 26): ``folder:PATH`` names, the layouts read (class folders with and
without split folders, CSV and JSONL lists, names files, a CoOp split file), the split written once to the cache
and never into the user's folder, and every bad input named before training."""

from __future__ import annotations

import json
import os
import random
import warnings
from pathlib import Path

import pytest
from PIL import Image

from vlprompt.datasets import DatasetError, FewShotWarning, build_dataset, dataset_facts
from vlprompt.datasets.user import UserDatasetWarning
from vlprompt.names import canonical_dataset, leaf_name, split_leaf
from vlprompt.user_datasets import UserDatasetError, user_datasets


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """A registry and split files of the test's own."""
    monkeypatch.setenv("VLPROMPT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    Image.new("RGB", (8, 8), tuple(rng.randrange(256) for _ in range(3))).save(path)


def class_folders(root: Path, classes: dict[str, int], under: str = "") -> Path:
    """``root/<under>/<class>/<i>.png`` with the given number of images per class (distinct contents)."""
    for c, (name, n) in enumerate(classes.items()):
        for i in range(n):
            _png(root / under / name / f"{i}.png", hash((under, c, i)) % 10_000)
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``root`` with its size and mtime: what 'nothing written there' compares."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


# ------------------------------------------------------------------------------------------ names
def test_a_folder_is_registered_under_one_short_name(tmp_path):
    photos = class_folders(tmp_path / "my photos", {"cat": 10, "dog": 10})
    name = canonical_dataset(f"folder:{photos}")
    assert name == "folder-my-photos"
    assert canonical_dataset(str(photos)) == name  # a path that exists, without folder:
    assert canonical_dataset("folder_my_photos") == name and canonical_dataset("Folder-My-Photos") == name
    assert split_leaf(leaf_name(name)) == (name, [])  # configs/<method>/folder_my_photos.py composes it
    other = class_folders(tmp_path / "elsewhere" / "my photos", {"cat": 10, "dog": 10})
    assert canonical_dataset(f"folder:{other}") == "folder-my-photos-2"
    assert canonical_dataset(f"folder:{photos}?split_seed=2") == "folder-my-photos-3"  # other options: other data
    assert user_datasets()[name] == {"path": str(photos)}


@pytest.mark.parametrize("spec, message", [
    ("folder:", r"give the folder or list file after 'folder:'"),
    ("folder:/no/such/place", r"no such folder or list file: /no/such/place"),
    ("folder:{root}?colour=red", r"unknown option 'colour=red'; options .*names: .*split_file"),
    ("folder:{root}?train=1.5", r"train='1.5' is not a fraction"),
    ("folder:{root}?train=0.7&val=0.4", r"leave no images for test"),
    ("folder:{root}?split_seed=x", r"split_seed='x' is not a whole number"),
    ("folder:{root}?names=/no/names.txt", r"names=/no/names.txt: no such file"),
])
def test_a_bad_folder_name_is_refused_naming_what_is_wrong(tmp_path, spec, message):
    root = class_folders(tmp_path / "photos", {"cat": 4})
    with pytest.raises(UserDatasetError, match=message):
        canonical_dataset(spec.format(root=root))


def test_the_facts_of_a_user_dataset(tmp_path):
    photos = class_folders(tmp_path / "photos", {"cat": 10, "dog": 10})
    described = tmp_path / "descriptions.json"
    described.write_text(json.dumps({"cat": ["a small feline"], "dog": ["a loyal canine"]}))
    facts = dataset_facts(f"folder:{photos}?descriptions={described}")
    assert facts["name"] == "folder-photos" and facts["family"] is None and facts["backbone"] is None
    assert facts["knowledge"] == {"file": str(described)} and facts["template"] == "a photo of a {}."


# ------------------------------------------------------------------------------------------ layouts
def test_class_folders_are_split_as_coop_and_nothing_is_written_there(tmp_path, private_cache):
    photos = class_folders(tmp_path / "photos", {"sea_lion": 10, "Red_Fox": 7, "cat": 5})
    before = snapshot(photos)
    train = build_dataset(f"folder:{photos}", split="train")
    assert train.classnames == ["cat", "Red Fox", "sea lion"]  # "_" read as a space; sorted by name, case aside
    counts = {s: [sum(it.label == c for it in train.with_split(s).items) for c in range(3)] for s in ("train", "val",
                                                                                                       "test")}
    # round(n * 0.5) train, round(n * 0.2) val, the rest test, per class (CoOp's read_and_split_data)
    assert counts == {"train": [2, 4, 5], "val": [1, 1, 2], "test": [2, 2, 3]}
    split_file = private_cache / "user_datasets" / "folder-photos" / "split.json"
    written = json.loads(split_file.read_text())
    assert written["source"] == str(photos) and written["train"][0][2] in train.classnames
    assert snapshot(photos) == before  # nothing written into the user's folder

    again = build_dataset("folder-photos", split="train")  # later runs read the split file
    assert [it.impath for it in again.items] == [it.impath for it in train.items]
    reseeded = build_dataset(f"folder:{photos}?split_seed=2", split="train")
    assert {it.impath for it in reseeded.items} != {it.impath for it in train.items}

    shots = build_dataset("folder-photos", split="train", num_shots=2, seed=1)
    assert len(shots.items) == 6 and snapshot(photos) == before  # few-shot picks go to the cache too


def test_split_folders_are_used_and_val_is_carved_from_train(tmp_path):
    root = tmp_path / "split_photos"
    class_folders(root, {"cat": 10, "dog": 5}, "train")
    class_folders(root, {"cat": 3, "dog": 2}, "test")
    ds = build_dataset(f"folder:{root}", split="train")
    sizes = {s: len(ds.with_split(s).items) for s in ("train", "val", "test")}
    assert sizes == {"train": 8 + 4, "val": 2 + 1, "test": 5}  # Dassl's split_trainval: round(n * 0.2) to val
    class_folders(root, {"cat": 2, "dog": 2}, "val")
    ds = build_dataset(f"folder:{root}?split_seed=3", split="val")
    assert len(ds.items) == 4 and all("/val/" in it.impath for it in ds.items)


def test_csv_with_names_and_with_indices_and_a_names_file(tmp_path):
    images = tmp_path / "imgs"
    for i in range(12):
        _png(images / f"{i}.png", i)
    by_name = tmp_path / "list.csv"
    by_name.write_text("path,label\n" + "".join(f"imgs/{i}.png,{'sea_lion' if i % 2 else 'cat'}\n" for i in range(12)))
    ds = build_dataset(f"folder:{by_name}", split="test")
    assert ds.classnames == ["cat", "sea lion"] and len(ds.items) == 2 * (6 - 3 - 1)

    by_index = tmp_path / "indexed.csv"
    by_index.write_text("".join(f"imgs/{i}.png,{i % 3},{('train', 'train', 'test', 'val')[i % 4]}\n"
                                for i in range(12)))
    names = tmp_path / "names.txt"
    names.write_text("tabby cat\nred fox\nsea lion\n")
    ds = build_dataset(f"folder:{by_index}?names={names}", split="train")
    assert ds.classnames == ["tabby cat", "red fox", "sea lion"]
    assert {Path(it.impath).name: it.classname for it in ds.items}["4.png"] == "red fox"  # row 4: label 1
    with pytest.raises(DatasetError, match=r"the labels are indices: give their names with names="):
        build_dataset(f"folder:{by_index}", split="train")


def test_jsonl_and_a_names_map_of_folder_names(tmp_path):
    photos = class_folders(tmp_path / "photos", {"n01": 5, "n02": 5})
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"n02": "golden retriever", "n01": "tabby cat"}))  # its order is the label order
    ds = build_dataset(f"folder:{photos}?names={names}", split="test")
    assert ds.classnames == ["golden retriever", "tabby cat"]
    listing = tmp_path / "list.jsonl"
    listing.write_text("".join(json.dumps({"path": f"photos/n0{1 + i % 2}/{i // 2}.png", "label": f"n0{1 + i % 2}",
                                           "split": "test" if i < 4 else "train"}) + "\n" for i in range(10)))
    ds = build_dataset(f"folder:{listing}?names={names}", split="test")
    assert ds.classnames == ["golden retriever", "tabby cat"] and len(ds.items) == 4


def test_a_coop_split_file_is_read_as_it_is(tmp_path):
    photos = class_folders(tmp_path / "photos", {"cat": 2, "dog": 2})
    split = {"train": [["photos/cat/0.png", 0, "cat"], ["photos/dog/0.png", 1, "dog"]], "val": [],
             "test": [["photos/cat/1.png", 0, "cat"], ["photos/dog/1.png", 1, "dog"]]}  # relative to its folder
    path = photos.parent / "split_zhou_Photos.json"
    path.write_text(json.dumps(split))
    ds = build_dataset(f"folder:{path}", split="test")
    assert [Path(it.impath).relative_to(tmp_path).as_posix() for it in ds.items] == ["photos/cat/1.png",
                                                                                     "photos/dog/1.png"]


# ------------------------------------------------------------------------------------------ the split file
def test_an_existing_split_file_is_read_and_never_overwritten(tmp_path, private_cache):
    photos = class_folders(tmp_path / "photos", {"cat": 10, "dog": 10})
    shared = tmp_path / "shared" / "split.json"
    build_dataset(f"folder:{photos}?split_file={shared}", split="train")
    first = shared.read_bytes()
    _png(photos / "cat" / "new.png", 999)
    with pytest.warns(UserDatasetWarning, match=r"1 image\(s\) of .* are not in its split file .*cat/new.png"):
        build_dataset(f"folder:{photos}?split_file={shared}", split="train")
    assert shared.read_bytes() == first

    other = class_folders(tmp_path / "other", {"cat": 10, "dog": 10})
    with pytest.raises(DatasetError, match=rf"the split file was written for another dataset \({photos}, not "
                                           rf"{other}\)"):
        build_dataset(f"folder:{other}?split_file={shared}", split="train")
    assert shared.read_bytes() == first


# ------------------------------------------------------------------------------------------ bad input
def test_an_empty_class_folder_is_named(tmp_path):
    photos = class_folders(tmp_path / "photos", {"cat": 5})
    (photos / "dog").mkdir()
    (photos / "dog" / "notes.txt").write_text("to do")
    with pytest.raises(DatasetError, match=rf"class folder 'dog' holds no images .*: {photos / 'dog'}"):
        build_dataset(f"folder:{photos}")


def test_a_folder_without_class_folders_is_named(tmp_path):
    flat = tmp_path / "flat"
    _png(flat / "a.png", 1)
    with pytest.raises(DatasetError, match=rf"holds no class folders .*: {flat}"):
        build_dataset(f"folder:{flat}")


def test_non_image_files_are_passed_over_and_named(tmp_path):
    photos = class_folders(tmp_path / "photos", {"cat": 5, "dog": 5})
    (photos / "cat" / "Thumbs.db").write_bytes(b"x")
    with pytest.warns(UserDatasetWarning, match=r"1 file\(s\) in .* passed over: cat/Thumbs.db"):
        ds = build_dataset(f"folder:{photos}", split="train")
    assert all(it.impath.endswith(".png") for it in ds.items)


def test_a_corrupt_image_is_named_before_training(tmp_path):
    photos = class_folders(tmp_path / "photos", {"cat": 5, "dog": 5})
    train = build_dataset(f"folder:{photos}", split="train")
    broken = Path(train.items[0].impath)
    broken.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=rf"cannot read image .*{broken}"):
        build_dataset("folder-photos", split="train", num_shots=8, seed=1)  # decoded when cached, before a step


def test_a_symbolic_link_out_of_the_folder_is_refused(tmp_path):
    photos = class_folders(tmp_path / "photos", {"cat": 5})
    _png(tmp_path / "secret" / "x.png", 3)
    os.symlink(tmp_path / "secret", photos / "dog")
    with pytest.raises(DatasetError, match=rf"a symbolic link leads out of the dataset folder: {photos / 'dog'}"):
        build_dataset(f"folder:{photos}")
    inside = class_folders(tmp_path / "ok", {"cat": 5})
    os.symlink(inside / "cat" / "0.png", inside / "cat" / "link.png")  # a link inside the root stays allowed
    assert len(build_dataset(f"folder:{inside}", split="train").with_split("test").items) >= 1


def test_list_labels_outside_the_names_file_and_repeated_paths_are_named(tmp_path):
    for i in range(6):
        _png(tmp_path / f"{i}.png", i)
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n")
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("0.png,cat\n1.png,dog\n2.png,fox\n")
    with pytest.raises(DatasetError, match=rf"labels not in the names file {names}: fox"):
        build_dataset(f"folder:{unknown}?names={names}")
    repeated = tmp_path / "repeated.csv"
    repeated.write_text("0.png,cat\n1.png,dog\n./0.png,dog\n")
    with pytest.raises(DatasetError, match=rf"line 3 repeats the image of line 1 \(./0.png\): {repeated}"):
        build_dataset(f"folder:{repeated}")
    missing = tmp_path / "missing.csv"
    missing.write_text("0.png,cat\n9.png,dog\n")
    with pytest.raises(DatasetError, match=rf"line 2: no such image {tmp_path / '9.png'}"):
        build_dataset(f"folder:{missing}")


def test_names_that_collide_once_case_and_underscores_are_set_aside_are_refused(tmp_path):
    photos = class_folders(tmp_path / "photos", {"Sea_Lion": 5, "sea lion": 5})
    with pytest.raises(DatasetError, match=r"classes 'Sea_Lion' and 'sea lion' are one name"):
        build_dataset(f"folder:{photos}")


def test_a_class_with_fewer_images_than_the_shots_warns_with_the_real_counts(tmp_path):
    photos = class_folders(tmp_path / "photos", {"cat": 20, "dog": 6})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build_dataset(f"folder:{photos}", split="train", num_shots=8, seed=1)
    assert any(issubclass(w.category, FewShotWarning) and "'dog' 3" in str(w.message) for w in caught)
    assert ds.shots == {"requested": 8, "min": 3, "max": 8, "short": {"dog": 3}}


def test_a_class_too_small_to_split_is_named(tmp_path):
    photos = class_folders(tmp_path / "photos", {"cat": 10, "dog": 2})
    with pytest.raises(DatasetError, match=r"class 'dog' has 2 images: too few to split"):
        build_dataset(f"folder:{photos}")
