"""Tests for the procedurally generated toy world (vlprompt.toyworld / vlprompt.datasets.toyworld)."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlprompt.datasets import toyworld as tw
from vlprompt.toyworld import datasets as twd

SMALL = {"train": 2, "val": 1, "test": 2}
SMALL_TEST = {"test": 2}


def small_counts(name: str) -> dict[str, int]:
    spec = tw.toy_spec(name)
    if spec.captions:
        return {"pairs": 24}
    return SMALL if len(spec.counts) == 3 else SMALL_TEST


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    for name in tw.TOY_ALL:
        tw.ensure_toy_dataset(name, root, counts=small_counts(name))
    return root


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.size == (64, 64)
        return np.asarray(im)


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- determinism


def test_sample_pairs_deterministic_and_seed_dependent():
    a, ca = tw.sample_pairs(16, seed=1)
    b, cb = tw.sample_pairs(16, seed=1)
    c, cc = tw.sample_pairs(16, seed=2)
    assert a.shape == (16, 64, 64, 3) and a.dtype == np.uint8
    assert a.tobytes() == b.tobytes() and ca == cb
    assert a.tobytes() != c.tobytes() and ca != cc
    assert all(isinstance(t, str) and t for t in ca)


def test_render_deterministic():
    scene = tw.sample_scene(np.random.default_rng(3), shape="star", pattern="checkered")
    for style in tw.STYLES:
        s = tw.Scene(scene.objects, scene.background, style)
        assert tw.render(s, 64, 7).tobytes() == tw.render(s, 64, 7).tobytes()
        assert tw.render(s, 32, 7).shape == (32, 32, 3)


def test_generate_same_seed_same_bytes(tmp_path: Path):
    counts = {"train": 1, "val": 0, "test": 1}
    a = tw.generate_dataset("toy-shapes", tmp_path / "a" / "toy-shapes", seed=5, counts=counts)
    b = tw.generate_dataset("toy-shapes", tmp_path / "b" / "toy-shapes", seed=5, counts=counts)
    c = tw.generate_dataset("toy-shapes", tmp_path / "c" / "toy-shapes", seed=6, counts=counts)
    fa, fb, fc = file_bytes(a), file_bytes(b), file_bytes(c)
    pngs = [k for k in fa if k.endswith(".png")]
    assert len(pngs) == 80
    for k in fa:
        if k != "meta.json":  # meta.json records the wall time
            assert fa[k] == fb[k], k
    assert sum(fa[k] != fc[k] for k in pngs) == len(pngs)


# ----------------------------------------------------------------------------- layout and format


@pytest.mark.parametrize("name", tw.TOY_DATASETS)
def test_layout_and_split_file(small_root: Path, name: str):
    d = small_root / name
    classnames = (d / "classnames.txt").read_text().splitlines()
    n = {"toy-colours": 8, "toy-sizes": 20}.get(name, 40)  # the single-attribute multitask sources
    assert classnames == tw.toy_classnames(name) and len(classnames) == n
    assert len(set(classnames)) == n
    split = json.loads((d / f"split_{name}.json").read_text())
    assert set(split) == {"train", "val", "test"}
    counts = small_counts(name)
    for s in ("train", "val", "test"):
        items = split[s]
        assert len(items) == counts.get(s, 0) * n
        for item in items:
            rel, label, cname = item
            assert isinstance(rel, str) and isinstance(label, int) and isinstance(cname, str)
            assert 0 <= label < n and classnames[label] == cname
            assert (d / "images" / rel).is_file()
        if items:
            assert sorted({i[1] for i in items}) == list(range(n))
    if name != "toy-shapes" and name.startswith("toy-shapes"):
        assert split["train"] == [] and split["val"] == []
        assert classnames == tw.toy_classnames("toy-shapes")
    knowledge = json.loads((d / "knowledge.json").read_text())
    assert list(knowledge) == classnames
    assert all(len(t) > 20 and t.endswith(".") for t in knowledge.values())
    meta = json.loads((d / "meta.json").read_text())
    assert meta["complete"] is True and meta["name"] == name and meta["seed"] == tw.DEFAULT_SEED
    assert meta["version"] == tw.GENERATOR_VERSION and meta["num_images"] == sum(counts.values()) * n


def test_caption_pool_layout(small_root: Path):
    d = small_root / tw.TOY_CAPTIONS
    pairs = json.loads((d / "captions.json").read_text())
    assert len(pairs) == 24
    for rel, text in pairs:
        assert (d / "images" / rel).is_file() and isinstance(text, str) and text
    assert json.loads((d / "meta.json").read_text())["kind"] == "captions"


def test_default_sizes_and_class_order():
    assert tw.dataset_size("toy-shapes") == 3200 and tw.dataset_size("toy-patterns") == 3200
    assert dict(tw.toy_spec("toy-shapes").counts)["train"] >= 16  # 16-shot sampling
    for name, attr, values in (("toy-shapes", "colour", tw.COLOURS), ("toy-patterns", "pattern", tw.PATTERNS)):
        classes = tw.toy_spec(name).classes
        for half in (classes[:20], classes[20:]):  # base and novel halves (CoOp subsample_classes)
            attrs = [dict(a) for _, a in half]
            assert {a["shape"] for a in attrs} == set(tw.SHAPES)
            assert {a[attr] for a in attrs} == set(values)


# ----------------------------------------------------------------------------- cache, atomicity


def test_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []
    real = twd._write_png

    def flaky(img, path):
        calls.append(path)
        if len(calls) > 5:
            raise RuntimeError("disk full")
        real(img, path)

    monkeypatch.setattr(twd, "_write_png", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        tw.ensure_toy_dataset("toy-shapes", tmp_path, counts=SMALL)
    assert not (tmp_path / "toy-shapes").exists()
    assert list(tmp_path.iterdir()) == []  # the temporary folder was removed too


def test_incomplete_and_temp_folders_are_not_complete(tmp_path: Path):
    final = tmp_path / "toy-shapes-night"
    final.mkdir()
    (final / "junk.txt").write_text("half written")
    (final / "images").mkdir()
    tmp = tmp_path / ".toy-shapes-night.tmp-999-deadbeef"
    tmp.mkdir()
    (tmp / "meta.json").write_text(json.dumps({"complete": True}))
    assert not tw.is_complete(final)
    (final / "meta.json").write_text(json.dumps({"complete": False}))
    assert not tw.is_complete(final)
    (final / "meta.json").write_text("{not json")
    assert not tw.is_complete(final)

    out = tw.ensure_toy_dataset("toy-shapes-night", tmp_path, counts=SMALL_TEST)
    assert out == final and tw.is_complete(final)
    assert not (final / "junk.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([final.name, tmp.name])  # fresh tmp kept
    # a dataset made with other parameters (e.g. an older generator version) is replaced
    meta = json.loads((final / "meta.json").read_text())
    (final / "meta.json").write_text(json.dumps({**meta, "version": "0"}))
    tw.ensure_toy_dataset("toy-shapes-night", tmp_path, counts=SMALL_TEST)
    assert json.loads((final / "meta.json").read_text())["version"] == tw.GENERATOR_VERSION


def test_reuse_does_not_regenerate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tw.ensure_toy_dataset("toy-patterns", tmp_path, counts=SMALL)
    mtime = (out / "meta.json").stat().st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("regenerated")

    monkeypatch.setattr(twd, "_write_png", boom)
    assert tw.ensure_toy_dataset("toy-patterns", tmp_path, counts=SMALL) == out
    assert (out / "meta.json").stat().st_mtime_ns == mtime


def test_commit_race_loser_discards(tmp_path: Path):
    final = tw.generate_dataset("toy-shapes-sketch", tmp_path / "toy-shapes-sketch", counts=SMALL_TEST)
    mtime = (final / "meta.json").stat().st_mtime_ns
    time.sleep(0.01)
    # a second writer finishing later must keep the complete dataset and drop its own copy
    tw.generate_dataset("toy-shapes-sketch", final, counts=SMALL_TEST, overwrite=False)
    assert (final / "meta.json").stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == ["toy-shapes-sketch"]
    # overwrite=True (the default) replaces it
    tw.generate_dataset("toy-shapes-sketch", final, counts=SMALL_TEST)
    assert (final / "meta.json").stat().st_mtime_ns != mtime
    assert [p.name for p in tmp_path.iterdir()] == ["toy-shapes-sketch"]


def _ensure_in_child(root: str) -> None:
    tw.ensure_toy_dataset("toy-shapes", root, counts={"train": 3, "val": 1, "test": 2})


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_concurrent_generation(tmp_path: Path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_ensure_in_child, args=(str(tmp_path),)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert [p.name for p in tmp_path.iterdir()] == ["toy-shapes"]
    d = tmp_path / "toy-shapes"
    assert tw.is_complete(d)
    split = json.loads((d / "split_toy-shapes.json").read_text())
    assert all((d / "images" / r).is_file() for s in split.values() for r, _, _ in s)
    assert len(list((d / "images").rglob("*.png"))) == 6 * 40


def test_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("VLPROMPT_CACHE", str(tmp_path))
    assert tw.toy_root() == tmp_path / "toyworld"
    monkeypatch.delenv("VLPROMPT_CACHE")
    assert tw.toy_root() == Path.home() / ".cache" / "vlprompt" / "toyworld"
    assert tw.toy_root(tmp_path / "x") == tmp_path / "x"


# ----------------------------------------------------------------------------- styles


def test_sketch_has_no_fill(small_root: Path):
    d = small_root / "toy-shapes-sketch"
    for p in sorted((d / "images").rglob("*.png")):
        img = load_rgb(p).astype(np.int16)
        chroma = img.max(-1) - img.min(-1)
        assert (chroma < 20).mean() > 0.85, p  # paper and grain are grey; only thin strokes are coloured
        assert img.mean() > 190, p
    # the inside of a large square is paper, not the object's colour
    o = tw.ToyObject("square", "red", "checkered", "large", 0.5, 0.5, 0.32, 0.0)
    img = tw.render(tw.Scene((o,), "dark", "sketch"), 64, 0).astype(np.int16)
    centre = img[24:40, 24:40]
    assert (centre.max(-1) - centre.min(-1)).max() < 20 and centre.min() > 200


def test_night_is_dark_and_matches_scenes(small_root: Path):
    shapes = json.loads((small_root / "toy-shapes" / "split_toy-shapes.json").read_text())["test"]
    night = json.loads((small_root / "toy-shapes-night" / "split_toy-shapes-night.json").read_text())["test"]
    assert [(r, y) for r, y, _ in shapes] == [(r, y) for r, y, _ in night]
    for rel, _, _ in night:
        n = load_rgb(small_root / "toy-shapes-night" / "images" / rel).astype(np.float32)
        day = load_rgb(small_root / "toy-shapes" / "images" / rel).astype(np.float32)
        assert n.mean() < 0.3 * 255 and n.mean() < day.mean()
        assert n.std() < day.std()  # lower contrast


def test_noise_domain_is_corrupted_copy(small_root: Path):
    split = json.loads((small_root / "toy-shapes-noise" / "split_toy-shapes-noise.json").read_text())
    for rel, _, _ in split["test"][:10]:
        noisy = load_rgb(small_root / "toy-shapes-noise" / "images" / rel).astype(np.float32)
        clean = load_rgb(small_root / "toy-shapes" / "images" / rel).astype(np.float32)
        diff = noisy - clean
        assert 10 < diff.std() < 60
        assert np.corrcoef(noisy.ravel(), clean.ravel())[0, 1] > 0.3


@pytest.mark.parametrize("kind", tw.CORRUPTIONS)
def test_corruption_severity_is_monotone(kind: str):
    img = tw.render(tw.sample_scene(np.random.default_rng(0), pattern="striped"), 64, 0)
    errs = [np.abs(tw.corrupt(img, kind, s, 1).astype(np.float32) - img).mean() for s in range(1, 6)]
    assert all(a < b for a, b in zip(errs, errs[1:], strict=False)), errs
    with pytest.raises(ValueError):
        tw.corrupt(img, kind, 6)


# ----------------------------------------------------------------------------- captions, coverage


def test_pairs_cover_attribute_space_and_styles():
    _, caps, scenes = tw.sample_pairs(3000, seed=0, size=16, return_scenes=True)
    objs = [o for s in scenes for o in s.objects]
    assert {o.shape for o in objs} == set(tw.SHAPES) and {o.colour for o in objs} == set(tw.COLOURS)
    assert {o.pattern for o in objs} == set(tw.PATTERNS) and {o.size for o in objs} == set(tw.SIZES)
    assert {s.background for s in scenes} == set(tw.BACKGROUNDS)
    styles = [s.style for s in scenes]
    assert 0.75 < styles.count("photo") / 3000 < 0.85 and 0.07 < styles.count("sketch") / 3000 < 0.13
    single = [(s, c) for s, c in zip(scenes, caps, strict=True) if len(s.objects) == 1]
    colour = np.mean([s.objects[0].colour in c for s, c in single])
    shape = np.mean([s.objects[0].shape in c for s, c in single])
    assert colour > 0.9 and shape > 0.8, (colour, shape)
    _, caps, scenes = tw.sample_pairs(200, seed=0, style_probs={"night": 1}, return_scenes=True)
    assert all(s.style == "night" for s in scenes)


def _mentions_pattern(text: str) -> bool:
    words = ("solid", "plain", "stripe", "stripy", "dot", "spotted", "check", "chequer", "in squares",
             "pattern", "flat colour")
    return any(w in text for w in words)


def test_caption_probabilities_are_parameters():
    never = tw.CaptionProbs(pattern=0.0, background=0.0, size=0.0)
    always = tw.CaptionProbs(pattern=1.0)
    _, caps = tw.sample_pairs(300, 4, 16, caption_probs=never, style_probs={"photo": 1})
    assert not any(_mentions_pattern(c) for c in caps)
    _, caps = tw.sample_pairs(300, 4, 16, caption_probs=always, style_probs={"photo": 1})
    assert all(_mentions_pattern(c) for c in caps)
    _, caps = tw.sample_pairs(1000, 4, 16, style_probs={"photo": 1})
    rate = np.mean([_mentions_pattern(c) for c in caps])
    assert 0.15 < rate < 0.4, rate  # default: pattern named in about a quarter of the captions
    assert len(set(caps)) > 500  # varied wording


# ----------------------------------------------------------------------------- speed


def test_generation_speed(tmp_path: Path):
    t = time.perf_counter()
    tw.sample_pairs(300, seed=0)
    pairs_rate = 300 / (time.perf_counter() - t)
    t = time.perf_counter()
    tw.generate_dataset("toy-shapes", tmp_path / "toy-shapes", counts={"train": 4, "val": 1, "test": 3})
    write_rate = 320 / (time.perf_counter() - t)
    print(f"\ntoy world speed (this process, one core): sample_pairs {pairs_rate:.0f} img/s, "
          f"writer incl. PNG {write_rate:.0f} img/s (fs: {tmp_path})")
    assert pairs_rate > 100 and write_rate > 100


def test_unknown_names_raise(tmp_path: Path):
    with pytest.raises(ValueError):
        tw.ensure_toy_dataset("toy-nope", tmp_path)
    with pytest.raises(ValueError):
        tw.toy_classnames(tw.TOY_CAPTIONS)
    with pytest.raises(ValueError):
        tw.generate_dataset("toy-shapes-night", tmp_path / "x", counts={"train": 3})
    assert not any(tmp_path.iterdir())


def test_hues_are_toy_shapes_images_under_colour_words_no_caption_uses(small_root: Path):
    shapes = json.loads((small_root / "toy-shapes" / "split_toy-shapes.json").read_text())
    hues = json.loads((small_root / "toy-hues" / "split_toy-hues.json").read_text())
    for split in ("train", "val", "test"):
        assert len(hues[split]) == len(shapes[split]) > 0
        for (rel_s, y_s, name_s), (rel_h, y_h, name_h) in zip(shapes[split], hues[split], strict=True):
            colour, shape = name_s.split()
            assert y_h == y_s and name_h == f"{tw.RARE_COLOUR_WORDS[colour]} {shape}"
            assert np.array_equal(load_rgb(small_root / "toy-hues" / "images" / rel_h),
                                  load_rgb(small_root / "toy-shapes" / "images" / rel_s))
    knowledge = json.loads((small_root / "toy-hues" / "knowledge.json").read_text())
    assert knowledge["crimson circle"].startswith("A crimson circle is") and "red" in knowledge["crimson circle"]
    # the words never reach the pretraining text, whatever the caption settings
    probs = tw.CaptionProbs(colour=1.0, pattern=1.0, size=1.0, background=1.0, position=1.0, synonym=1.0)
    _, captions = tw.sample_pairs(600, seed=(1, 2), size=32, caption_probs=probs)[:2]
    words = set(" ".join(captions).replace(".", " ").replace(",", " ").split())
    assert words.isdisjoint(tw.RARE_COLOUR_WORDS.values())
    assert {"red", "blue", "striped"} <= words
