"""``prepare_data.py verify`` on your own images (folder:PATH): every problem of a folder or list at once."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from tool_loader import load_tool

from vlprompt.cli import DATA_ENV
from vlprompt.datasets.user import read_user_layout
from vlprompt.datasets.user_verify import format_user_reports, verify_user_dataset

prep = load_tool("prepare_data")
_colours = itertools.count(1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLPROMPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(DATA_ENV, raising=False)
    return tmp_path / "cache"


def png(path: Path) -> Path:
    """A tiny PNG whose bytes differ from every other one made here."""
    n = next(_colours)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (n % 256, n // 256 % 256, 7)).save(path)
    return path


def folder(root: Path, classes: dict[str, int], split: str = "") -> Path:
    for name, n in classes.items():
        for i in range(n):
            png(root / split / name / f"{i}.png")
    return root


def verify(capsys, *args: str) -> tuple[int, str]:
    code = prep.main(["verify", "--no-progress", *args])
    return code, capsys.readouterr().out


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in [root, *root.rglob("*")]}


def row(out: str, name: str) -> list[str]:
    return next(line.split() for line in out.splitlines() if line.split()[:1] == [name])


def test_a_clean_folder_passes_with_its_counts_per_class_and_split(tmp_path, capsys, private_cache):
    root = folder(tmp_path / "photos", {"cat": 10, "red_fox": 10})
    before = snapshot(root)
    code, out = verify(capsys, "--datasets", f"folder:{root}", "--shots", "4")
    assert code == 0, out
    assert row(out, "folder-photos")[:2] == ["folder-photos", "found"]
    assert "train 10  val 4  test 6" in out  # CoOp's cut: round(10 * 0.5) / round(10 * 0.2) / the rest
    assert row(out, "cat") == ["cat", "5", "2", "3", "10"] and row(out, "red")[:3] == ["red", "fox", "5"]
    assert "computed in memory" in out and "No problem found" in out
    assert "error:" not in out and "warning:" not in out
    assert snapshot(root) == before  # nothing written into the folder...
    assert not (private_cache / "user_datasets").exists()  # ...nor the split file
    # now registered: its short name is enough, and no data root is needed for it
    code, again = verify(capsys, "--datasets", "folder-photos")
    assert code == 0 and row(again, "folder-photos")[1] == "found"


def test_every_problem_of_a_folder_is_reported_in_one_run(tmp_path, capsys, private_cache):
    root = tmp_path / "photos"
    folder(root, {"cat": 6, "dog": 6, "Sea_Lion": 5, "sea lion": 5}, "train")
    folder(root, {"cat": 3, "dog": 3, "Sea_Lion": 2, "sea lion": 2}, "test")
    png(root / "train" / "owl" / "0.png")  # 1 training image: below --shots 4
    (root / "train" / "empty").mkdir()
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    shutil.copyfile(root / "train" / "cat" / "0.png", root / "test" / "cat" / "copy.png")
    png(root / "stray.png")
    before = snapshot(root)

    code, out = verify(capsys, "--datasets", f"folder:{root}", "--shots", "4")
    assert code == 1, out
    assert row(out, "folder-photos")[1] == "broken"
    lines = out.splitlines()

    def problem(*words: str) -> str:
        found = [line for line in lines if line.strip().startswith(("error:", "warning:"))
                 and all(w in line for w in words)]
        assert len(found) == 1, (words, out)
        return found[0]

    assert problem("class folder 'empty' holds no images", str(root / "train" / "empty")).strip().startswith("error")
    problem("not an image", str(root / "train" / "cat" / "notes.txt"))
    problem("unreadable image", str(root / "train" / "dog" / "broken.png"))
    problem("same file in train and test", "train/cat/0.png", "test/cat/copy.png")
    problem("'owl' has 1 training image(s), fewer than --shots 4")
    problem("'Sea_Lion' (train/Sea_Lion, test/Sea_Lion)", "'sea lion' (train/sea lion, test/sea lion)")
    problem("image beside the class folders", str(root / "stray.png"))
    assert "the reader stops at: [folder-photos] class folder 'empty'" in out  # the reader's first problem, kept
    assert row(out, "cat")[:2] == ["cat", "5"]  # counts still given: 6 train images, 1 carved into val
    assert snapshot(root) == before and not (private_cache / "user_datasets").exists()


def test_a_list_names_every_bad_line(tmp_path, capsys):
    for name in ("a", "b", "c", "d"):
        png(tmp_path / "img" / f"{name}.png")
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    (tmp_path / "list.csv").write_text(
        "path,label,split\n"
        "img/a.png,cat,train\n"
        "img/b.png,dog,train\n"
        "img/c.png,zebra,test\n"  # line 4: no such class in the names file
        "img/a.png,cat,test\n"  # line 5: repeats line 2
        "img/gone.png,dog,test\n"  # line 6: no such file
        "img/d.png,dog,test\n")
    code, out = verify(capsys, "--datasets", f"folder:{tmp_path / 'list.csv'}?names={tmp_path / 'names.txt'}")
    assert code == 1, out
    assert row(out, "folder-list")[1] == "broken" and "(CSV list)" in out
    assert "error: label 'zebra' (line 4) is not in the names file" in out
    assert "error: line 5 repeats the image of line 2 (img/a.png)" in out
    assert f"error: line 6: no such image {tmp_path / 'img' / 'gone.png'}" in out
    assert "the reader stops at:" in out and "line 5 repeats" in out  # the reader stops at the first


def test_a_split_the_reader_refuses_is_still_planned_as_it_would_cut_it(tmp_path):
    root = folder(tmp_path / "photos", {"ant": 7, "bee": 5, "cow": 9})
    clean = read_user_layout({"path": str(root)}, "x")[0]
    (root / "empty").mkdir()  # the reader now refuses the folder; the scan plans the same cut without it
    report = verify_user_dataset(f"folder:{root}")
    assert report.status == "broken" and report.reader_error
    expected = {c: {s: sum(r[2] == c for r in clean[s]) for s in ("train", "val", "test")}
                for c in ("ant", "bee", "cow")}
    assert report.class_counts == expected
    assert [p.category for p in report.problems] == ["empty"]


def test_a_written_split_file_is_what_is_counted(tmp_path, capsys):
    from vlprompt.datasets.builder import canonical_name
    from vlprompt.datasets.user import UserDataset

    root = folder(tmp_path / "photos", {"cat": 4, "dog": 4})
    name = canonical_name(f"folder:{root}")
    UserDataset(dataset=name, split="train", transform=None, progress=False)  # writes its split on first use
    png(root / "cat" / "new.png")  # added after the split was written: training leaves it out
    code, out = verify(capsys, "--datasets", name)
    assert code == 1 and "read from the split file written on first use" in out
    assert "1 image(s) are not in the split file" in out and "cat/new.png" in out
    assert "train 4  val 2  test 2" in out


def test_many_classes_give_a_compact_table_and_benchmarks_still_need_a_data_root(tmp_path, capsys):
    root = tmp_path / "many"
    folder(root, {f"class{i:02d}": 1 for i in range(25)}, "train")
    folder(root, {f"class{i:02d}": 1 for i in range(25)}, "test")
    report = verify_user_dataset(f"folder:{root}", check_images=False)
    text = format_user_reports([report], check_images=False)
    assert "classes (train/test images each):" in text and "class00 1/1" in text and "class24 1/1" in text
    assert report.status == "found" and report.images_checked == 0
    assert prep.main(["verify", "--datasets", f"folder:{root}", "dtd"]) == 2
    assert "no data root for dtd" in capsys.readouterr().err
    assert prep.main(["verify", "--datasets", f"folder:{tmp_path / 'nowhere'}"]) == 2
    with pytest.raises(SystemExit) as exit_:
        prep.main(["verify", "--datasets", f"folder:{root}", "--shots", "0"])
    assert exit_.value.code == 2


def test_a_registered_folder_that_is_gone_is_missing(tmp_path, capsys):
    root = folder(tmp_path / "photos", {"cat": 4, "dog": 4})
    assert verify(capsys, "--datasets", f"folder:{root}")[0] == 0
    shutil.rmtree(root)
    code, out = verify(capsys, "--datasets", "folder-photos")
    assert code == 1 and row(out, "folder-photos")[1] == "missing"
    assert os.fspath(root) in out


def test_a_coop_split_file_names_its_bad_rows(tmp_path, capsys):
    import json

    a = png(tmp_path / "img" / "a.png")
    png(tmp_path / "img" / "b.png")
    shutil.copyfile(a, tmp_path / "img" / "a_again.png")
    split = {"train": [["img/a.png", 0, "cat"], ["img/b.png", 1, "dog"], ["img/c.png", 1, "dog"]],
             "val": [["img/b.png", 1, "dog"]], "test": [["img/a_again.png", 0, "cat"], "bad row"]}
    (tmp_path / "split_zhou_mine.json").write_text(json.dumps(split))
    code, out = verify(capsys, "--datasets", f"folder:{tmp_path / 'split_zhou_mine.json'}")
    assert code == 1 and "(CoOp split file)" in out
    assert "error: split 'train' row 2: no such image" in out and "img/c.png" in out
    assert "error: split 'val' row 0 repeats the image of split 'train' row 1 (img/b.png)" in out
    assert "error: split 'test' row 1: 'bad row' is not [relpath, label, classname]" in out
    assert "same file in train and test" in out and "img/a.png (class 'cat') = img/a_again.png (class 'cat')" in out
