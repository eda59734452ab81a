"""Your own images through every tool (issue 26): a folder of class folders, named ``folder:PATH``, trained on
with CoOp through ``tools/train.py`` (few-shot, all classes), swept by ``tools/fewshot.py`` and
``tools/base2novel.py``, adapted on by ``tools/tta.py``, labelled round by round by ``tools/active.py``, and the
result used on held-out files by ``tools/predict.py``; ``tools/make_toy_world.py --as-folder`` writes the offline
demonstration's folders. Nothing is written into the image folder."""

from __future__ import annotations

import csv
import json
import random
import re
import shlex
from pathlib import Path

import pytest
from helpers import ROOT
from PIL import Image
from tool_loader import load_tool

TINY = ["model.backbone.name=test-tiny", "model.backbone.pretrained=None"]
SHARED_TOY_ROOT = ""  # the toy world's folder in the shared test cache (set by private_cache)
LOADERS = ["train_dataloader.num_workers=0", "test_dataloader.num_workers=0"]


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """A registry of user datasets, split files and few-shot picks of this module's own (the runs a sweep
    starts inherit it); the toy world stays in the shared cache (``SHARED_TOY_ROOT``)."""
    from vlprompt.toyworld import toy_root

    global SHARED_TOY_ROOT
    SHARED_TOY_ROOT = str(toy_root(None))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLPROMPT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _folder(root: Path, classes: int = 3, per_class: int = 10) -> Path:
    rng = random.Random(0)
    for c in range(classes):
        for i in range(per_class):
            path = root / f"class_{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), tuple(rng.randrange(256) for _ in range(3))).save(path)
    return root


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = _folder(tmp_path_factory.mktemp("own") / "photos")
    return root, _snapshot(root)


@pytest.fixture(scope="module")
def trained(photos, tmp_path_factory):
    """tools/train.py: few-shot CoOp on the folder (2 shots, all classes, 1 epoch on the tiny random CLIP)."""
    root, _ = photos
    work = tmp_path_factory.mktemp("run") / "coop"
    load_tool("train").main(["--method", "coop", "--dataset", f"folder:{root}", "--overlay", "few_shot",
                             "--work-dir", str(work), "--cfg-options", *TINY, *LOADERS, "train_cfg.max_epochs=1",
                             "train_dataloader.dataset.num_shots=2"])
    return work


def test_few_shot_coop_trains_on_a_folder_through_train_py(photos, trained):
    root, before = photos
    result = json.loads((trained / "results.json").read_text())
    assert result["run"]["shots"]["requested"] == 2 and result["run"]["shots"]["min"] == 2
    model = result["run"]["model"]
    assert model["learner"]["type"] == "coop"
    assert result["metrics"]["accuracy/top1"] >= 0
    from vlprompt.learned import read_learned

    _, meta = read_learned(trained / "learned.safetensors")
    assert meta["class_names"] == ["class 0", "class 1", "class 2"]  # "_" read as a space
    assert _snapshot(root) == before  # nothing was written into the image folder


def test_predict_uses_the_result_on_held_out_files(photos, trained, tmp_path, capsys):
    root, before = photos
    held = _folder(tmp_path / "held", classes=3, per_class=1)
    listing = tmp_path / "held.csv"
    listing.write_text("path,label\n" + "".join(f"held/class_{c}/0.png,class_{c}\n" for c in range(3)))
    out = tmp_path / "predictions.csv"
    results = load_tool("predict").main([str(trained), str(listing), "--output", str(out), "--top-k", "2"])
    printed = capsys.readouterr().out
    assert "top-1" in printed and "on the 3 images whose class the list gives" in printed
    right = sum(r["top"][0][0] == f"class {i}" for i, r in enumerate(results))
    assert f"top-1 {100 * right / 3:.2f} %" in printed
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and {r["image"] for r in rows} == {str(held / f"class_{c}" / "0.png") for c in range(3)}
    assert _snapshot(root) == before


@pytest.mark.slow  # two sweeps of one 1-epoch run each, and their zero-shot reference (about 30 s)
def test_the_fewshot_and_base2novel_sweeps_run_over_a_folder(photos, tmp_path):
    root, before = photos
    paths = load_tool("fewshot").main(["--method", "coop", "--datasets", f"folder:{root}", "--shots", "1",
                                       "--seeds", "1", "--epochs", "1", "--work-root", str(tmp_path / "fs"),
                                       "--cfg-options", *TINY])
    table = Path(paths["table"] if isinstance(paths, dict) else next(tmp_path.glob("fs/coop/*.md"))).read_text()
    assert "| folder-photos" in table
    load_tool("base2novel").main(["--method", "coop", "--datasets", f"folder:{root}", "--seeds", "1",
                                  "--work-root", str(tmp_path / "b2n"), "--cfg-options", *TINY,
                                  "train_cfg.max_epochs=1"])
    results = list((tmp_path / "b2n").rglob("results.json"))
    assert results and all("folder" in str(p) for p in results)
    assert "| folder-photos" in next((tmp_path / "b2n").rglob("base2novel.md")).read_text()
    assert _snapshot(root) == before


@pytest.mark.slow  # TPT on 4 test images and one active-learning round (about 15 s)
def test_tta_and_an_active_round_run_on_a_folder(photos, tmp_path):
    root, before = photos
    from vlprompt.names import canonical_dataset, leaf_name

    leaf = leaf_name(canonical_dataset(f"folder:{root}"))
    load_tool("tta").main([f"configs/tpt/{leaf}.py", "--limit", "4", "--work-dir", str(tmp_path / "tta"),
                           "--cfg-options", *TINY, "views.n_views=4", "adapter.selection_p=0.5"])
    tta = json.loads((tmp_path / "tta" / "results.json").read_text())
    assert tta["samples"]["count"] == 4
    load_tool("active").main([f"configs/active/{leaf}.py", "--samplers", "random", "--pcb", "off", "--seeds", "1",
                              "--rounds", "1", "--work-root", str(tmp_path / "active"), "--cfg-options", *TINY,
                              "train_cfg.max_epochs=1"])
    to_label = tmp_path / "active" / "random" / "seed1" / "to_label_round0.csv"
    rows = list(csv.DictReader(to_label.open()))
    state = json.loads((to_label.parent / "active_state.json").read_text())
    assert len(rows) == len(state["rounds"][0]["selected"]) == 3  # one image per class in round 0
    assert all(Path(r["path"]).is_file() and Path(r["path"]).is_relative_to(root) for r in rows)
    assert _snapshot(root) == before


def test_make_toy_world_writes_a_toy_dataset_as_plain_folders(tmp_path):
    out = tmp_path / "demo"
    load_tool("make_toy_world").main(["--as-folder", str(out), "--per-class", "3", "--held-out", "1",
                                      "--root", SHARED_TOY_ROOT])
    classes = sorted(p.name for p in (out / "photos").iterdir())
    assert len(classes) == 40 and all(" " not in c for c in classes)  # toy-hues' classes, "_" for spaces
    assert all(len(list((out / "photos" / c).glob("*.png"))) == 3 for c in classes)
    rows = list(csv.DictReader((out / "new_photos.csv").open()))
    assert len(rows) == 40 and all((out / r["path"]).is_file() for r in rows)
    assert {r["label"].replace(" ", "_") for r in rows} == set(classes)
    with pytest.raises(SystemExit):  # never into a folder that holds something
        from vlprompt.cli import run_tool

        run_tool(lambda: load_tool("make_toy_world").main(["--as-folder", str(out)]), argv=[])


def readme_walkthrough() -> list[list[str]]:
    """The first ```bash block under README.md's ``## Your own images``, as argvs."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Your own images\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Your own images' section"
    block = re.search(r"```bash\n(.*?)```", section.group(1), re.S)
    return [shlex.split(line, comments=True) for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_walkthrough_names_tools_that_exist_and_its_table_times_each():
    commands = readme_walkthrough()
    assert [c[1] for c in commands] == ["tools/make_toy_world.py", "tools/prepare_data.py", "tools/predict.py",
                                        "tools/train.py", "tools/predict.py"]
    assert all((ROOT / c[1]).is_file() for c in commands)
    table = (ROOT / "README.md").read_text().split("## Your own images")[1].split("**the block**")[0]
    assert len(re.findall(r"^\| `(\w+)\.py", table, re.M)) == len(commands)


@pytest.mark.slow  # the README's walk-through, in order, with a 1-epoch training (about 25 s)
def test_the_readme_walkthrough_runs_in_order(tmp_path, capsys):
    """Each command as the README gives it (work_dirs/ moved to a temporary folder, the training shortened):
    the zero-shot and the learned predictions both report a top-1 on the held-out files."""
    printed = []
    for argv in readme_walkthrough():
        args = [a.replace("work_dirs/", f"{tmp_path}/") for a in argv[2:]]
        if argv[1] == "tools/make_toy_world.py":
            args += ["--per-class", "10", "--root", SHARED_TOY_ROOT]
        if argv[1] == "tools/train.py":
            args += ["train_cfg.max_epochs=1", "train_dataloader.dataset.num_shots=2"]
        result = load_tool(Path(argv[1]).stem).main(args)
        assert result in (0, None) or isinstance(result, (list, dict)), (argv, result)
        printed.append(capsys.readouterr().out)
    assert "No problem found" in printed[1]
    assert re.search(r"top-1 \d+\.\d\d % on the 80 images whose class the list gives", printed[2])
    assert re.search(r"top-1 \d+\.\d\d % on the 80 images whose class the list gives", printed[4])
    assert (tmp_path / "demo" / "predictions.csv").is_file()


def test_a_descriptions_file_attaches_to_a_folder_for_kapt(photos, tmp_path):
    """``folder:PATH?descriptions=FILE``: KAPT trains with the folder's class descriptions, and its checkpoint
    carries their text."""
    root, before = photos
    described = tmp_path / "descriptions.json"
    described.write_text(json.dumps({f"class {c}": [f"the {c}th kind of thing"] for c in range(3)}))
    work = tmp_path / "kapt"
    load_tool("train").main(["--method", "kapt", "--dataset", f"folder:{root}?descriptions={described}", "--overlay",
                             "few_shot", "--work-dir", str(work), "--cfg-options", *TINY, *LOADERS,
                             "train_cfg.max_epochs=1", "train_dataloader.dataset.num_shots=2"])
    from vlprompt.learned import read_learned

    _, meta = read_learned(work / "learned.safetensors")
    assert meta["learner"]["knowledge"]["file"] == str(described)
    assert meta["learner"]["knowledge_text"] == {f"class {c}": [f"the {c}th kind of thing"] for c in range(3)}
    assert _snapshot(root) == before


def test_an_mvlpt_target_run_on_a_folder_starts_from_a_source_prompt(photos, tmp_path):
    """MVLPT's transfer on your own images: an MCoOp prompt (here trained on another folder) starts the target run
    on the folder (``load_from``), as a multitask source prompt would."""
    root, before = photos
    source_folder = _folder(tmp_path / "other", classes=4, per_class=10)
    train = load_tool("train").main
    common = ["--overlay", "few_shot", "--cfg-options", *TINY, *LOADERS, "train_cfg.max_epochs=1",
              "train_dataloader.dataset.num_shots=2"]
    train(["--method", "mvlpt/mcoop", "--dataset", f"folder:{source_folder}", "--work-dir", str(tmp_path / "source"),
           *common])
    source = tmp_path / "source" / "learned.safetensors"
    train(["--method", "mvlpt/mcoop", "--dataset", f"folder:{root}", "--work-dir", str(tmp_path / "target"), *common,
           f"load_from={source}"])
    from vlprompt.learned import read_learned

    target, meta = read_learned(tmp_path / "target" / "learned.safetensors")
    assert meta["learner"]["type"] == "mcoop" and meta["class_names"] == ["class 0", "class 1", "class 2"]
    logs = "".join(p.read_text() for p in (tmp_path / "target").rglob("*.log"))  # training's and the test's
    assert f"learner parameters initialised from {source}" in logs
    assert _snapshot(root) == before


def test_gram_over_coop_runs_on_a_folder_from_a_gram_file(photos, tmp_path):
    """GRAM downstream on your own images: the meta-learned initialisation and regulator of a GRAM file (here a
    small one made on the tiny CLIP, as tools/meta_train.py writes them) start and regulate CoOp on the folder."""
    import torch

    from vlprompt.learned import read_learned
    from vlprompt.meta import save_gram_file
    from vlprompt.meta.gram import build_meta_learner, prompt_parameters

    root, before = photos
    backbone = {"name": "test-tiny", "pretrained": None}
    learner, regulator = build_meta_learner({"type": "coop", "n_ctx": 4, "ctx_init": "a photo of a",
                                             "class_token_position": "end"}, backbone, {"type": "gate"}, ["a", "b"])
    with torch.no_grad():
        for p in prompt_parameters(learner).values():
            p.add_(0.25)
    gram = save_gram_file(tmp_path / "gram.safetensors", learner, backbone, regulator, {"test": True})
    work = tmp_path / "gram_run"
    load_tool("train").main(["--method", "gram/coop", "--dataset", f"folder:{root}", "--overlay", "few_shot",
                             "--work-dir", str(work), "--cfg-options", *TINY, *LOADERS, "train_cfg.max_epochs=1",
                             "train_dataloader.dataset.num_shots=2", f"model.gram.file={gram}"])
    _, meta = read_learned(work / "learned.safetensors")
    assert meta["class_names"] == ["class 0", "class 1", "class 2"]
    recorded = json.loads((work / "results.json").read_text())["run"]["model"]["gram"]
    assert recorded["file"] == str(gram) and recorded["init"] is True and recorded["regulate"] is True
    assert _snapshot(root) == before


def test_a_local_weights_file_trains_on_a_folder_as_real_weights_would(photos, tmp_path):
    """The README's real-weights command with a local file (here the tiny CLIP's weights saved as safetensors):
    the run loads them, records their digest, and the learned prompts predict on new files with them."""
    from safetensors.torch import save_file

    from vlprompt.backbones import build_clip, state_digest
    from vlprompt.learned import read_learned

    root, before = photos
    clip = build_clip("test-tiny")
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, str(weights))
    work = tmp_path / "weights_run"
    load_tool("train").main(["--method", "coop", "--dataset", f"folder:{root}", "--overlay", "few_shot",
                             "--work-dir", str(work), "--cfg-options", "model.backbone.name=test-tiny",
                             f"model.backbone.pretrained={weights}", *LOADERS, "train_cfg.max_epochs=1",
                             "train_dataloader.dataset.num_shots=2"])
    _, meta = read_learned(work / "learned.safetensors")
    assert meta["backbone"]["pretrained"] == str(weights)
    assert meta["backbone_weights"] == state_digest(clip.model.state_dict())  # the file's weights, not random ones
    results = load_tool("predict").main([str(work), str(root / "class_1" / "0.png"), "--top-k", "1"])
    assert results[0]["top"][0][0] in meta["class_names"]
    assert _snapshot(root) == before
