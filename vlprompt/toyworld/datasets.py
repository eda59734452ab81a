"""Toy datasets on disk (CoOp layout) and the in-memory image-caption stream for pretraining.

On disk a dataset is ``<root>/<name>/`` with PNGs under ``images/``, a CoOp split file
``split_<name>.json`` = {"train"|"val"|"test": [[relpath, label, classname], ...]} (relpath relative
to ``images/``), ``classnames.txt`` (one name per line, in label order), ``knowledge.json``
{classname: sentence} and ``meta.json``. ``meta.json`` is written last and the folder is renamed
into place from a temporary sibling, so a folder is complete if and only if its meta.json says so.

Every image comes from its own generator seeded with (seed, dataset, split, label, index), so the
output is byte-identical for a given seed and independent of generation order. The domain variants
(sketch, night, noise) re-render exactly the scenes of toy-shapes' test split in another style;
``toy-hues`` is toy-shapes itself (every split) under class names the captions never use.

Class order matters for the base/novel protocol (the first half of the labels are the base
classes): it is interleaved so that base and novel classes both cover every shape, every colour
and every pattern, and novel classes are new compositions of attributes seen in base classes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .render import corrupt, render
from .text import CaptionProbs, caption, knowledge
from .world import COLOURS, PATTERNS, SHAPES, SIZES, STYLES, Scene, sample_scene

GENERATOR_VERSION = "1"
DEFAULT_SEED = 0
DEFAULT_STYLE_PROBS: Mapping[str, float] = {"photo": 0.8, "sketch": 0.1, "night": 0.1}
SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_P_TWO_DATASET = 0.2
_STALE_AFTER_S = 3600.0


@dataclass(frozen=True)
class ToySpec:
    """Definition of one toy dataset: classes (name + fixed attributes), style and split sizes."""

    name: str
    description: str
    classes: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    style: str = "photo"
    counts: tuple[tuple[str, int], ...] = (("train", 40), ("val", 10), ("test", 30))
    scene_source: str | None = None  # re-render the scenes of this dataset (domain variants)
    corruption: tuple[str, int] | None = None
    captions: bool = False  # an unlabeled image-caption pool instead of a classification set


def _shape_colour_classes() -> tuple:
    # Round k gives shape i the colour 3i+k (mod 8): 4 distinct colours per shape, 5 shapes per
    # colour; rounds 0-1 (base) and 2-3 (novel) each contain every shape and every colour.
    out = []
    for k in range(4):
        for i, shape in enumerate(SHAPES):
            colour = COLOURS[(3 * i + k) % len(COLOURS)]
            out.append((f"{colour} {shape}", (("colour", colour), ("shape", shape))))
    return tuple(out)


def _pattern_shape_classes() -> tuple:
    # Round k gives shape i the pattern i+k (mod 4): all 40 pattern-shape pairs, each half of the
    # label range holds every shape twice and every pattern five times.
    out = []
    for k in range(4):
        for i, shape in enumerate(SHAPES):
            pattern = PATTERNS[(i + k) % len(PATTERNS)]
            out.append((f"{pattern} {shape}", (("pattern", pattern), ("shape", shape))))
    return tuple(out)


_SHAPES_CLASSES = _shape_colour_classes()
# Single-attribute tasks, sources of the toy multitask (MVLPT) family with toy-patterns; their target
# is toy-shapes, whose classes compose what the sources name one at a time.
_COLOUR_CLASSES = tuple((f"{colour} shape", (("colour", colour),)) for colour in COLOURS)
_SIZE_CLASSES = tuple((f"{size} {shape}", (("size", size), ("shape", shape))) for shape in SHAPES for size in SIZES)

# Colour words that no caption uses (and no other class name): the tiny CLIP has never read them,
# so its zero-shot classifier cannot tell "crimson star" from "amber star" while its image features
# separate the colours perfectly, like CLIP's vocabulary gap on EuroSAT or FGVC-Aircraft names.
RARE_COLOUR_WORDS: dict[str, str] = {
    "red": "crimson", "orange": "amber", "yellow": "saffron", "green": "emerald",
    "blue": "cobalt", "purple": "violet", "pink": "salmon", "brown": "rust",
}
_HUES_CLASSES = tuple(
    (f"{RARE_COLOUR_WORDS[dict(attrs)['colour']]} {dict(attrs)['shape']}", attrs) for _, attrs in _SHAPES_CLASSES
)
_TEST_ONLY = (("test", 30),)
_SPECS: dict[str, ToySpec] = {
    s.name: s
    for s in (
        ToySpec("toy-shapes", "colour-shape compositions, photo style", _SHAPES_CLASSES),
        ToySpec("toy-patterns", "pattern-shape compositions (any colour), photo style",
                _pattern_shape_classes()),
        ToySpec("toy-colours", "the colour of the object (any shape, pattern and size), photo style", _COLOUR_CLASSES),
        ToySpec("toy-sizes", "size-shape pairs (any colour and pattern), photo style", _SIZE_CLASSES),
        ToySpec("toy-hues", "toy-shapes' images, colours named with words the pretraining captions never use",
                _HUES_CLASSES, scene_source="toy-shapes"),
        ToySpec("toy-shapes-sketch", "toy-shapes test scenes drawn as coloured outlines on paper",
                _SHAPES_CLASSES, style="sketch", counts=_TEST_ONLY, scene_source="toy-shapes"),
        ToySpec("toy-shapes-night", "toy-shapes test scenes at night: dark, low contrast, noisy",
                _SHAPES_CLASSES, style="night", counts=_TEST_ONLY, scene_source="toy-shapes"),
        ToySpec("toy-shapes-noise", "toy-shapes test scenes with gaussian noise (severity 3)",
                _SHAPES_CLASSES, counts=_TEST_ONLY, scene_source="toy-shapes",
                corruption=("gaussian_noise", 3)),
        ToySpec("toy-captions", "unlabeled image-caption pool in the pretraining distribution",
                counts=(("pairs", 2000),), captions=True),
    )
}

TOY_DATASETS: tuple[str, ...] = tuple(n for n, s in _SPECS.items() if not s.captions)
"""The classification datasets (each has a CoOp split file)."""
TOY_CAPTIONS = "toy-captions"
"""The unlabeled image-caption pool (``captions.json`` instead of a split file)."""
TOY_ALL: tuple[str, ...] = (*TOY_DATASETS, TOY_CAPTIONS)


def toy_spec(name: str) -> ToySpec:
    """The definition of toy dataset ``name``."""
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(f"unknown toy dataset {name!r}; expected one of {TOY_ALL}") from None


def toy_classnames(name: str) -> list[str]:
    """Class names of a toy classification dataset, in label order (no disk access)."""
    spec = toy_spec(name)
    if spec.captions:
        raise ValueError(f"{name!r} is an unlabeled caption pool, it has no classes")
    return [c for c, _ in spec.classes]


def toy_knowledge(name: str) -> dict[str, str]:
    """One short descriptive sentence per class, for knowledge-aware prompts."""
    return {c: knowledge(dict(attrs), name=c) for c, attrs in toy_spec(name).classes}


def toy_root(root: str | Path | None = None) -> Path:
    """The toy-world cache folder: ``root``, else ``$VLPROMPT_CACHE/toyworld``, else ~/.cache/..."""
    if root is not None:
        return Path(root).expanduser()
    from ..io import cache_root

    return cache_root() / "toyworld"


def _resolve_counts(spec: ToySpec, counts: Mapping[str, int] | None) -> dict[str, int]:
    out = dict(spec.counts)
    for k, v in (counts or {}).items():
        if k not in out:
            raise ValueError(f"{spec.name}: cannot set count {k!r}; it has {sorted(out)}")
        if v < 0:
            raise ValueError("counts must be >= 0")
        out[k] = int(v)
    return out


def dataset_size(name: str, counts: Mapping[str, int] | None = None) -> int:
    """Number of images the dataset has (for progress bars)."""
    spec = toy_spec(name)
    c = _resolve_counts(spec, counts)
    return sum(c.values()) if spec.captions else sum(c.values()) * len(spec.classes)


def _fingerprint(name: str, seed: int, image_size: int, counts: dict[str, int]) -> dict:
    return {"version": GENERATOR_VERSION, "name": name, "seed": seed, "image_size": image_size,
            "counts": counts}


def is_complete(path: str | Path, expect: Mapping | None = None) -> bool:
    """True if ``path`` holds a finished dataset (its meta.json marker), matching ``expect`` if given."""
    try:
        meta = json.loads((Path(path) / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or meta.get("complete") is not True:
        return False
    return all(meta.get(k) == v for k, v in (expect or {}).items())


def _write_png(img: np.ndarray, path: Path) -> None:
    Image.fromarray(img).save(path, format="PNG", compress_level=1)


def _image_rng(seed: int, source: str, split: str, label: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(source.encode()), _SPLIT_CODE[split], label, index])


def _write_classification(spec: ToySpec, out: Path, seed: int, size: int, counts: dict[str, int],
                          progress: Callable[[int], None] | None) -> dict[str, int]:
    images = out / "images"
    names = [c for c, _ in spec.classes]
    dirs = [c.replace(" ", "_") for c in names]
    for d in dirs:
        (images / d).mkdir(parents=True)
    source = spec.scene_source or spec.name
    split_file: dict[str, list] = {s: [] for s in SPLITS}
    for split, n in counts.items():
        for label, (cname, attrs) in enumerate(spec.classes):
            for i in range(n):
                rng = _image_rng(seed, source, split, label, i)
                scene = sample_scene(rng, **dict(attrs), style=spec.style, p_two=_P_TWO_DATASET)
                img = render(scene, size, rng)
                if spec.corruption is not None:
                    img = corrupt(img, *spec.corruption, rng=rng)
                rel = f"{dirs[label]}/{split}_{i:04d}.png"
                _write_png(img, images / rel)
                split_file[split].append([rel, label, cname])
                if progress is not None:
                    progress(1)
    (out / f"split_{spec.name}.json").write_text(json.dumps(split_file))
    (out / "classnames.txt").write_text("".join(c + "\n" for c in names))
    (out / "knowledge.json").write_text(json.dumps(toy_knowledge(spec.name), indent=1))
    return {s: len(v) for s, v in split_file.items()}


def _sample_pair(rng: np.random.Generator, size: int, styles: tuple[list[str], np.ndarray],
                 p_two: float, p_distinct: float, probs: CaptionProbs) -> tuple[np.ndarray, str, Scene]:
    names, cum = styles
    style = names[min(int(np.searchsorted(cum, rng.random(), side="right")), len(names) - 1)]
    scene = sample_scene(rng, style=style, p_two=p_two, p_distinct=p_distinct)
    return render(scene, size, rng), caption(scene, rng, probs), scene


def _style_table(style_probs: Mapping[str, float] | None) -> tuple[list[str], np.ndarray]:
    sp = dict(DEFAULT_STYLE_PROBS if style_probs is None else style_probs)
    bad = set(sp) - set(STYLES)
    if bad or not sp or any(v < 0 for v in sp.values()) or sum(sp.values()) <= 0:
        raise ValueError(f"style_probs must map styles {STYLES} to non-negative weights, got {sp}")
    names = list(sp)
    w = np.array([sp[k] for k in names], dtype=np.float64)
    return names, np.cumsum(w / w.sum())


def _write_captions(out: Path, seed: int, size: int, counts: dict[str, int],
                    progress: Callable[[int], None] | None) -> dict[str, int]:
    (out / "images").mkdir(parents=True)
    styles, probs = _style_table(None), CaptionProbs()
    pairs = []
    for i in range(counts["pairs"]):
        rng = _image_rng(seed, TOY_CAPTIONS, "train", 0, i)
        img, text, _ = _sample_pair(rng, size, styles, 0.25, 0.5, probs)
        rel = f"{i:05d}.png"
        _write_png(img, out / "images" / rel)
        pairs.append([rel, text])
        if progress is not None:
            progress(1)
    (out / "captions.json").write_text(json.dumps(pairs, indent=0))
    return {"pairs": len(pairs)}


def _commit(tmp: Path, final: Path, expect: Mapping, overwrite: bool) -> None:
    """Rename ``tmp`` to ``final``; a complete ``final`` from a concurrent writer wins over ``tmp``."""
    for _ in range(4):
        try:
            os.rename(tmp, final)
            return
        except OSError:  # final exists and is not empty (or is a file)
            if not overwrite and is_complete(final, expect):
                shutil.rmtree(tmp, ignore_errors=True)
                return
            old = final.with_name(f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            with contextlib.suppress(FileNotFoundError):
                os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)
            overwrite = False  # replaced once; from now on a concurrent complete copy is accepted
    raise OSError(f"could not move {tmp} to {final}")


def generate_dataset(
    name: str,
    out_dir: str | Path,
    seed: int = DEFAULT_SEED,
    *,
    counts: Mapping[str, int] | None = None,
    image_size: int = 64,
    progress: Callable[[int], None] | None = None,
    overwrite: bool = True,
) -> Path:
    """Render toy dataset ``name`` into ``out_dir`` atomically (temp sibling + rename); return it.

    ``counts`` overrides the images per class and split ({"train": 40, "val": 10, "test": 30}; test
    only for the domain variants) or the number of pairs ({"pairs": 2000}) for toy-captions.
    ``progress`` is called with 1 after each image. With ``overwrite=False`` an existing complete
    dataset with the same parameters (e.g. written concurrently by another process) is kept.
    """
    spec = toy_spec(name)
    final = Path(out_dir)
    c = _resolve_counts(spec, counts)
    expect = _fingerprint(name, int(seed), int(image_size), c)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    t0 = time.perf_counter()
    try:
        if spec.captions:
            written = _write_captions(tmp, int(seed), image_size, c, progress)
        else:
            written = _write_classification(spec, tmp, int(seed), image_size, c, progress)
        meta = {
            **expect,
            "generator": "vlprompt.toyworld",
            "description": spec.description,
            "kind": "captions" if spec.captions else "classification",
            "num_classes": len(spec.classes),
            "num_images": sum(written.values()),
            "written": written,
            "styles": sorted(DEFAULT_STYLE_PROBS) if spec.captions else [spec.style],
            "style_probs": dict(DEFAULT_STYLE_PROBS) if spec.captions else {spec.style: 1.0},
            "scene_source": spec.scene_source,
            "corruption": list(spec.corruption) if spec.corruption else None,
            "seconds": round(time.perf_counter() - t0, 3),
            "complete": True,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # completion marker, last
        _commit(tmp, final, expect, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _remove_stale(root: Path, name: str) -> None:
    now = time.time()
    for p in list(root.glob(f".{name}.tmp-*")) + list(root.glob(f".{name}.old-*")):
        try:
            if now - p.stat().st_mtime > _STALE_AFTER_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def ensure_toy_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    seed: int = DEFAULT_SEED,
    counts: Mapping[str, int] | None = None,
    image_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Return ``<root>/<name>``, generating it first unless a complete copy with these parameters
    is already there (an incomplete or outdated one is replaced). Safe to call concurrently."""
    spec = toy_spec(name)
    base = toy_root(root)
    final = base / name
    expect = _fingerprint(name, int(seed), int(image_size), _resolve_counts(spec, counts))
    if is_complete(final, expect):
        return final
    if base.is_dir():
        _remove_stale(base, name)
    return generate_dataset(name, final, seed, counts=counts, image_size=image_size,
                            progress=progress, overwrite=False)


def sample_pairs(
    n: int,
    seed: int | Sequence[int],
    size: int = 64,
    *,
    style_probs: Mapping[str, float] | None = None,
    p_two: float = 0.25,
    p_distinct: float = 0.5,
    caption_probs: CaptionProbs | None = None,
    return_scenes: bool = False,
) -> tuple[np.ndarray, list[str]] | tuple[np.ndarray, list[str], list[Scene]]:
    """``n`` random (image, caption) pairs for contrastive pretraining, in memory.

    Returns a (n, size, size, 3) uint8 array and n captions (plus the scenes if asked). Objects
    cover the same attribute space as the datasets (all 10 shapes x 8 colours x 4 patterns x 2
    sizes x 3 backgrounds); styles follow ``style_probs`` (default photo 0.8, sketch 0.1, night
    0.1); two objects appear with ``p_two``, of which ``p_distinct`` differ ("a red star and a blue
    circle"). How often captions name each attribute is set by ``caption_probs``.
    Deterministic in ``seed`` (an int or a sequence such as (epoch, step)).
    """
    rng = np.random.default_rng(seed)
    styles = _style_table(style_probs)
    probs = caption_probs or CaptionProbs()
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    texts: list[str] = []
    scenes: list[Scene] = []
    for i in range(n):
        images[i], text, scene = _sample_pair(rng, size, styles, p_two, p_distinct, probs)
        texts.append(text)
        scenes.append(scene)
    if return_scenes:
        return images, texts, scenes
    return images, texts
