"""Runs composed at run time from a method, a dataset and overlays: no config file per pair.

A run of method ``M`` on dataset ``D`` is

1. ``configs/M/_method.py``: the method's learner (or adapter) and its published recipe, with the
   protocol's data loaders whose dataset names are the placeholder ``"<dataset>"``. ``M`` may be a
   nested folder (``gram/coop``, ``promptsrc/few_shot``): a variant whose ``_method.py`` builds on
   another method's. Two optional keys are read and removed: ``overlays`` (names the method always
   uses) and ``recipe`` (its published differences: see below);
2. ``D``'s facts (:func:`vlprompt.datasets.dataset_facts`): every string ``"<dataset>"`` becomes the
   canonical name and every ``"<dataset.KEY>"`` that fact (``<dataset.template>``,
   ``<dataset.knowledge>``, ...); a dataset made for its own CLIP (the toy world) sets the model's
   backbone, and in-memory datasets set ``num_workers=0`` where a loader has that key;
3. overlays, each ``configs/_overlays_/<name>.py`` merged on top (``cross_dataset``, ``few_shot``);
   a leaf named ``<dataset>_xd`` asks for ``cross_dataset``;
4. the method's ``recipe`` entries that apply, in this order: the dataset's group (``toy``,
   ``imagenet_family``, ``fine_grained``), the dataset's name, each overlay's name, and
   ``"<dataset>+<overlay>"``.

``configs/M/D.py`` needs no file: :func:`resolve_config` composes it when the path does not exist. A
file that exists is loaded as it is (special runs such as MVLPT's multitask sources), and composed
too when it names its ``dataset`` (a leaf of pure composition: a method's file, a few changes and a
dataset name; the recipe entries apply on top of it).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmengine.config import Config

from ..errors import ConfigNotFoundError

CONFIGS_ROOT = Path(__file__).resolve().parents[2] / "configs"
"""The shipped configs (a config path outside it is composed against the ``configs`` folder it names)."""
METHOD_FILE = "_method.py"
OVERLAY_DIR = "_overlays_"
LEAF_SUFFIXES = {"_xd": "cross_dataset"}
"""Leaf-name suffixes that ask for an overlay: ``imagenet_xd`` is ImageNet's cross-dataset source run."""
_PLACEHOLDER = re.compile(r"^<dataset(?:\.(\w+))?>$")


def list_methods(root: Path = CONFIGS_ROOT) -> list[str]:
    """Every method and variant of ``root``: the folders (``coop``, ``gram/coop``) holding ``_method.py``."""
    return sorted(str(p.parent.relative_to(root).as_posix()) for p in root.rglob(METHOD_FILE)
                  if not p.parent.name.startswith("_"))


def list_overlays(root: Path = CONFIGS_ROOT) -> list[str]:
    """The overlay names (files of ``configs/_overlays_/``)."""
    return sorted(p.stem for p in (root / OVERLAY_DIR).glob("[!_]*.py"))


def _configs_root(path: Path) -> Path | None:
    """The ``configs`` folder that ``path`` lies in, if any."""
    for parent in path.parents:
        if parent.name == "configs":
            return parent
    return None


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def check_method(method: str, root: Path = CONFIGS_ROOT) -> Path:
    """The folder of ``method``, or an error naming the closest methods and listing them all."""
    folder = root / method
    if not (folder / METHOD_FILE).is_file():
        methods = list_methods(root)
        raise ConfigNotFoundError(f"unknown method {method!r}{_suggest(method, methods)}: {folder / METHOD_FILE} "
                                  f"does not exist; methods: {', '.join(methods)}")
    return folder


def split_leaf(stem: str) -> tuple[str, list[str]]:
    """A leaf name as its dataset and the overlays its suffix asks for (``imagenet_xd``)."""
    from ..datasets import canonical_name

    try:
        return canonical_name(stem), []
    except KeyError:
        for suffix, overlay in LEAF_SUFFIXES.items():
            if stem.endswith(suffix):
                dataset, overlays = split_leaf(stem[: -len(suffix)])
                return dataset, [*overlays, overlay]
        raise


def fill_placeholders(node: Any, facts: Mapping[str, Any]) -> Any:
    """``node`` with ``"<dataset>"`` and ``"<dataset.KEY>"`` strings replaced by the dataset's facts."""
    if isinstance(node, str):
        match = _PLACEHOLDER.match(node)
        if not match:
            return node
        key = match.group(1) or "name"
        if key not in facts:
            raise ConfigNotFoundError(f"{node}: datasets have no fact {key!r}; facts: {', '.join(sorted(facts))}")
        return facts[key]
    if isinstance(node, Mapping):
        return {k: fill_placeholders(v, facts) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(fill_placeholders(v, facts) for v in node)
    return node


def recipe_keys(facts: Mapping[str, Any], overlays: Sequence[str]) -> list[str]:
    """The ``recipe`` entries that apply to a run on a dataset with ``facts`` and ``overlays``, in order."""
    group = {"toy": "toy", "imagenet": "imagenet_family"}.get(facts["family"], "fine_grained")
    return [group, facts["name"], *overlays, *(f"{facts['name']}+{o}" for o in overlays)]


def _dataset_defaults(cfg: Config, facts: Mapping[str, Any]) -> None:
    """What the dataset decides of a run: its own CLIP (the toy world) and in-loop data loading."""
    if facts.get("backbone"):
        if isinstance(cfg.get("model"), Mapping) and "backbone" in cfg.model:
            cfg.model.backbone = dict(facts["backbone"])
        if "backbone" in cfg:
            cfg.backbone = dict(facts["backbone"])
        for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
            loader = cfg.get(key)
            if isinstance(loader, Mapping) and "num_workers" in loader:
                loader.num_workers = 0  # the toy world is decoded in memory: worker processes cost more than they give


def compose_config(method: str, dataset: str, overlays: Sequence[str] = (), root: Path = CONFIGS_ROOT,
                   filename: str | os.PathLike | None = None) -> Config:
    """The run of ``method`` on ``dataset`` with ``overlays``, as a config (named ``filename``,
    by default ``<root>/<method>/<dataset>.py``)."""
    folder = check_method(method, root)
    cfg = Config.fromfile(str(folder / METHOD_FILE))
    leaf = folder / f"{dataset.replace('-', '_')}.py"
    return _compose(cfg, folder / METHOD_FILE, dataset, overlays, root, filename or leaf)


def _compose(cfg: Config, source: Path, dataset: str, overlays: Sequence[str], root: Path,
             filename: str | os.PathLike) -> Config:
    """``cfg`` (loaded from ``source``) with ``dataset``'s facts, the overlays and the recipe entries that apply."""
    from ..datasets import dataset_facts

    try:
        facts = dataset_facts(dataset)
    except KeyError as err:
        raise ConfigNotFoundError(f"{source}: {err.args[0]}") from None
    recipe = cfg._cfg_dict._to_lazy_dict().get("recipe") or {}  # classes stay lazy, as the file's own values
    for key in [k for k in cfg if k in ("dataset", "recipe") or k.startswith("_")]:  # a method file's own names
        cfg.pop(key)
    overlays = [*(cfg.pop("overlays", None) or []), *overlays]
    known = list_overlays(root)
    for name in overlays:
        if name not in known:
            raise ConfigNotFoundError(f"unknown overlay {name!r}{_suggest(name, known)}; overlays: {', '.join(known)}")
    _dataset_defaults(cfg, facts)
    for name in overlays:
        cfg.merge_from_dict(Config.fromfile(str(root / OVERLAY_DIR / f"{name}.py")).to_dict())
    for key in recipe_keys(facts, overlays):
        if key in recipe:
            cfg.merge_from_dict(recipe[key])
    # not cfg.to_dict(), which turns classes into their names: lazy, as Config.fromfile keeps them (a class is
    # imported when the run builds it, and printed by its name); the names a file imported stay out, as in to_dict()
    items = {k: v for k, v in cfg._cfg_dict._to_lazy_dict().items() if k not in getattr(cfg, "_imported_names", ())}
    plain = fill_placeholders(items, facts)
    text = (f"# {filename}: composed from {source}, the dataset {facts['name']!r}"
            f"{' and the overlays ' + ', '.join(overlays) if overlays else ''} (vlprompt.engine.compose)\n")
    return Config(plain, cfg_text=text, filename=str(filename))


def config_exists(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a config file or a run that :func:`resolve_config` composes (no file is read)."""
    path = Path(path)
    if path.is_file():
        return True
    root = _configs_root(path.resolve())
    if root is None or path.suffix != ".py" or not (path.resolve().parent / METHOD_FILE).is_file():
        return False
    try:
        split_leaf(path.stem)
    except KeyError:
        return False
    return True


def resolve_config(path: str | os.PathLike, overlays: Sequence[str] = ()) -> Config:
    """``path`` loaded if it is a file, else composed from the method folder and the leaf name it
    names (``configs/maple/dtd.py``: MaPLe on DTD). A path that names neither is refused at once,
    naming the closest existing method or dataset."""
    path = Path(path)
    if path.is_file():
        cfg = Config.fromfile(str(path))
        if isinstance(cfg.get("dataset"), str):  # a leaf of pure composition: a method's file + a dataset name
            root = _configs_root(path.resolve()) or CONFIGS_ROOT
            return _compose(cfg, path, cfg.dataset, overlays, root, path)
        if overlays:
            raise ConfigNotFoundError(f"{path} is a whole run: overlays ({', '.join(overlays)}) apply to composed runs")
        return cfg
    root = _configs_root(path.resolve())
    if root is None or path.suffix != ".py":
        raise ConfigNotFoundError(f"config not found: {path} (a config is a file, or configs/<method>/<dataset>.py "
                                  f"for a composed run)")
    method = path.resolve().parent.relative_to(root).as_posix()
    check_method(method, root)
    try:
        dataset, leaf_overlays = split_leaf(path.stem)
    except KeyError as err:
        raise ConfigNotFoundError(f"config not found: {path}: {err.args[0]}") from None
    return compose_config(method, dataset, [*leaf_overlays, *overlays], root=root, filename=path)
