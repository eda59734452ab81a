"""The names a user types for a run (datasets, methods, config paths), checked with the standard library only.

One name per dataset: the registry name of its reader (``toy-shapes``, ``oxford-pets``, ``imagenet-a``).
Every other spelling a reader accepts (``toy_shapes``, ``OxfordPets``, ``pets``, its folder name) maps
to it (:func:`canonical_dataset`) before a name reaches a run folder, a table row or a config path, so
two spellings never make two runs; a composed config's leaf is the canonical name with underscores
(``configs/coop/toy_shapes.py``). An unknown dataset, method or config path is refused naming the
closest datasets, methods or existing and composable config paths.

The tools check these names right after parsing their arguments, before torch is imported, so a typo
answers at once: :data:`DATASET_SPELLINGS` is a static copy of the registered readers' names and
spellings (the readers themselves import torch). ``tests/tools/test_names.py`` keeps it equal to the
registry, and :func:`vlprompt.datasets.canonical_name` resolves names through the same functions with
the registry's own table (``vlprompt.datasets.builder.dataset_spellings``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .errors import ConfigNotFoundError, UserError
from .user_datasets import USER_DATASET_PREFIX, parse_user_dataset, register_user_dataset, user_datasets

CONFIGS_ROOT = Path(__file__).resolve().parents[1] / "configs"
"""The shipped configs."""
METHOD_FILE = "_method.py"
"""The file that makes a folder of ``configs/`` a method (or a variant such as ``gram/coop``)."""
LEAF_SUFFIXES = {"_xd": "cross_dataset"}
"""Leaf-name suffixes that ask for an overlay: ``imagenet_xd`` is ImageNet's cross-dataset source run."""

DATASET_SPELLINGS: dict[str, tuple[str, ...]] = {
    "imagenet": ("ImageNet",),
    "caltech101": ("Caltech101", "caltech-101"),
    "oxford-pets": ("OxfordPets", "oxford_pets", "pets"),
    "stanford-cars": ("StanfordCars", "stanford_cars", "cars"),
    "oxford-flowers": ("OxfordFlowers", "oxford_flowers", "flowers102", "flowers"),
    "food101": ("Food101", "food-101"),
    "fgvc-aircraft": ("FGVCAircraft", "fgvc_aircraft", "aircraft"),
    "sun397": ("SUN397",),
    "dtd": ("DescribableTextures", "DTD"),
    "eurosat": ("EuroSAT",),
    "ucf101": ("UCF101",),
    "imagenet-v2": ("ImageNetV2", "imagenetv2"),
    "imagenet-sketch": ("ImageNetSketch",),
    "imagenet-a": ("ImageNetA", "imagenet-adversarial"),
    "imagenet-r": ("ImageNetR", "imagenet-rendition"),
    "codan": ("CODaN",),
    "elevater-caltech-101": ("classification/caltech_101_20211007",),
    "elevater-cifar-10": ("classification/cifar_10_20211007",),
    "elevater-cifar-100": ("classification/cifar100_20200721",),
    "elevater-country211": ("classification/country211_20210924",),
    "elevater-dtd": ("classification/dtd_20211007",),
    "elevater-eurosat-clip": ("classification/eurosat_clip_20210930",),
    "elevater-fer-2013": ("classification/fer_2013_20211008",),
    "elevater-fgvc-aircraft-2013b-variants102": ("classification/fgvc_aircraft_2013b_variants102_20211007",),
    "elevater-food-101": ("classification/food_101_20211007",),
    "elevater-gtsrb": ("classification/gtsrb_20210923",),
    "elevater-hateful-memes": ("classification/hateful_memes_20211014",),
    "elevater-kitti-distance": ("classification/kitti_distance_20210923",),
    "elevater-mnist": ("classification/mnist_20211008",),
    "elevater-oxford-flower-102": ("classification/oxford_flower_102_20211007",),
    "elevater-oxford-iiit-pets": ("classification/oxford_iiit_pets_20211007",),
    "elevater-patch-camelyon": ("classification/patch_camelyon_20211007",),
    "elevater-rendered-sst2": ("classification/rendered_sst2_20210924",),
    "elevater-resisc45-clip": ("classification/resisc45_clip_20210924",),
    "elevater-stanford-cars": ("classification/stanford_cars_20211007",),
    "toy-colours": (),
    "toy-hues": (),
    "toy-patterns": (),
    "toy-shapes": (),
    "toy-shapes-night": (),
    "toy-shapes-noise": (),
    "toy-shapes-sketch": (),
    "toy-sizes": (),
}
"""Every registered dataset (the readers' registry names, in :func:`vlprompt.datasets.list_datasets`'s
order) and the other spellings its reader accepts: Dassl class names, aliases and its folder name
(``split-folder``, which needs a folder argument, is not a dataset name). A copy, so that names are
checked without importing the readers; tests/tools/test_names.py fails when it differs from the registry."""


class UnknownNameError(UserError, KeyError):
    """A dataset name that no reader has (a ``KeyError``, as an unknown registry key always was)."""

    def __str__(self) -> str:  # the message, without the quotes KeyError adds
        return str(self.args[0]) if self.args else ""


def name_key(name: str) -> str:
    """``name`` as names are compared: lower case, ``_`` read as ``-`` (``Toy_Shapes`` is ``toy-shapes``)."""
    return name.strip().lower().replace("_", "-")


def closest(word: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6, margin: float = 1.0) -> list[str]:
    """The ``n`` choices closest to ``word`` (compared as :func:`name_key`), best first; those more than
    ``margin`` less similar than the best are left out."""
    by_key: dict[str, str] = {}
    for choice in choices:
        by_key.setdefault(name_key(choice), choice)
    key = name_key(word)
    close = difflib.get_close_matches(key, list(by_key), n=n, cutoff=cutoff)
    score = {k: difflib.SequenceMatcher(None, key, k).ratio() for k in close}
    return [by_key[k] for k in close if score[k] >= score[close[0]] - margin]


def did_you_mean(names: Sequence[str]) -> str:
    """`` (did you mean a or b?)`` for ``names``; empty when there are none."""
    return f" (did you mean {' or '.join(names)}?)" if names else ""


# -------------------------------------------------------------------------------------------- datasets
def canonical_dataset(name: str, datasets: Mapping[str, Iterable[str]] = DATASET_SPELLINGS) -> str:
    """The one name of dataset ``name`` (any accepted spelling, case and ``_``/``-`` aside), or an
    :class:`UnknownNameError` naming the closest datasets; ``datasets`` maps names to their spellings."""
    if name in datasets:
        return name
    spec = parse_user_dataset(name)  # folder:PATH (your own images): registered under one short name
    if spec is not None:
        return register_user_dataset(spec, taken=tuple(datasets))
    datasets = {**datasets, **{n: () for n in user_datasets() if n not in datasets}}
    key = name_key(name)
    for canonical, spellings in datasets.items():
        if key == name_key(canonical) or key in {name_key(s) for s in spellings}:
            return canonical
    spelled = {s: canonical for canonical, spellings in datasets.items() for s in (canonical, *spellings)}
    close = list(dict.fromkeys(spelled[s] for s in closest(name, spelled, n=6)))[:3]
    raise UnknownNameError(f"unknown dataset {name!r}{did_you_mean(close)}; known: {', '.join(datasets)}; or "
                           f"{USER_DATASET_PREFIX}PATH for your own images (a folder of class folders or a list)")


def canonical_datasets(names: Iterable[str], datasets: Mapping[str, Iterable[str]] = DATASET_SPELLINGS) -> list[str]:
    """``names`` as their one names (:func:`canonical_dataset`), each dataset once, in order."""
    return list(dict.fromkeys(canonical_dataset(name, datasets) for name in names))


def leaf_name(dataset: str) -> str:
    """The config leaf of a canonical dataset name: ``toy-shapes`` -> ``toy_shapes``."""
    return dataset.replace("-", "_")


def split_leaf(stem: str, datasets: Mapping[str, Iterable[str]] = DATASET_SPELLINGS) -> tuple[str, list[str]]:
    """A config leaf name as its dataset's one name and the overlays its suffix asks for (``imagenet_xd``:
    ImageNet, ``cross_dataset``); an :class:`UnknownNameError` when it names no dataset."""
    dataset, suffixes = _leaf_parts(stem, datasets)
    return dataset, [LEAF_SUFFIXES[s] for s in suffixes]


def _leaf_parts(stem: str, datasets: Mapping[str, Iterable[str]]) -> tuple[str, list[str]]:
    try:
        return canonical_dataset(stem, datasets), []
    except UnknownNameError:
        for suffix in LEAF_SUFFIXES:
            if stem.endswith(suffix) and len(stem) > len(suffix):
                dataset, suffixes = _leaf_parts(stem[: -len(suffix)], datasets)
                return dataset, [*suffixes, suffix]
        raise


# --------------------------------------------------------------------------------------------- methods
def list_methods(root: Path = CONFIGS_ROOT) -> list[str]:
    """Every method and variant of ``root``: the folders (``coop``, ``gram/coop``) holding ``_method.py``."""
    return sorted(str(p.parent.relative_to(root).as_posix()) for p in Path(root).rglob(METHOD_FILE)
                  if not p.parent.name.startswith("_"))


def check_method(method: str, root: Path = CONFIGS_ROOT) -> Path:
    """The folder of ``method``, or a :class:`~vlprompt.errors.ConfigNotFoundError` naming the closest
    methods and listing them all."""
    folder = Path(root) / method
    if not (folder / METHOD_FILE).is_file():
        methods = list_methods(root)
        raise ConfigNotFoundError(f"unknown method {method!r}{did_you_mean(closest(method, methods, cutoff=0.5))}: "
                                  f"{folder / METHOD_FILE} does not exist; methods: {', '.join(methods)}")
    return folder


def canonical_method(method: str, root: Path = CONFIGS_ROOT) -> str:
    """``method`` as its folder under ``root`` names it (``CoOp``, ``coop/`` and ``configs/coop`` are
    ``coop``), or the error of :func:`check_method`."""
    name = method.strip().strip("/")
    if name.startswith("configs/"):
        name = name[len("configs/"):]
    if not (Path(root) / name / METHOD_FILE).is_file():
        name = next((m for m in list_methods(root) if m.lower() == name.lower()), name)
    check_method(name, root)
    return name


# ---------------------------------------------------------------------------------------- config paths
def configs_root(path: str | os.PathLike) -> Path | None:
    """The ``configs`` folder that ``path`` lies in, if any."""
    for parent in Path(os.path.abspath(path)).parents:
        if parent.name == "configs":
            return parent
    return None


def config_files(root: Path) -> list[str]:
    """The config files of ``root`` as paths relative to it (``coop/..``, ``gram/meta_coop_toy.py``):
    ``_base_``, ``_overlays_`` and the ``_``-prefixed files that configs import are left out."""
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*.py")
                  if not any(part.startswith("_") for part in p.relative_to(root).parts))


def check_config_path(path: str | os.PathLike, datasets: Mapping[str, Iterable[str]] = DATASET_SPELLINGS) -> str:
    """``path`` if it is a file, else the composed run it names with its dataset's one name
    (``configs/coop/Toy-Shapes.py`` -> ``configs/coop/toy_shapes.py``); a path that names neither is a
    :class:`~vlprompt.errors.ConfigNotFoundError` naming the closest existing config files and
    composable runs. Reads folder names only: the tools call it before importing torch."""
    text = os.fspath(path)
    if os.path.isfile(text):
        return text
    path = Path(text)
    root = configs_root(path)
    if root is None or path.suffix != ".py":
        hint = did_you_mean([(path.parent / f).as_posix() for f in _files_near(path)])
        raise ConfigNotFoundError(f"config not found: {text}{hint} (a config is a file, or "
                                  f"configs/<method>/<dataset>.py for a composed run)")
    method = Path(os.path.abspath(path)).parent.relative_to(root).as_posix()
    try:
        if (root / method).is_dir() and not (root / method / METHOD_FILE).is_file():
            raise ConfigNotFoundError(f"{path.parent} holds configs but is no method (it has no {METHOD_FILE})")
        check_method(method, root)
        dataset, suffixes = _leaf_parts(path.stem, datasets)
    except (ConfigNotFoundError, UnknownNameError) as err:
        why = str(err)
    else:
        return os.fspath(path.with_name(leaf_name(dataset) + "".join(suffixes) + ".py"))
    shown = _shown_root(path, root)
    candidates = config_files(root) + [f"{m}/{leaf_name(d)}.py" for m in list_methods(root) for d in datasets]
    rel = path.relative_to(shown).as_posix() if path.is_relative_to(shown) else path.name
    hint = did_you_mean([(shown / c).as_posix() for c in closest(rel, candidates, margin=0.05)])
    raise ConfigNotFoundError(f"config not found: {text}{hint}: no such file, and no run to compose: {why}")


def _files_near(path: Path) -> list[str]:
    """The names of the ``.py`` files beside ``path`` closest to its name."""
    folder = path.parent
    if not folder.is_dir():
        return []
    return closest(path.name, [p.name for p in folder.glob("*.py")], margin=0.05)


def _shown_root(path: Path, root: Path) -> Path:
    """The ``configs`` folder as ``path`` spells it (``configs``, ``../configs``), for the suggestions."""
    parts = path.parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "configs":
            return Path(*parts[: i + 1])
    return root
