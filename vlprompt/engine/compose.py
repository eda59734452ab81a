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
   ``imagenet_family``, ``fine_grained``), the dataset's name, each overlay's name,
   ``"<group>+<overlay>"`` and ``"<dataset>+<overlay>"``.

``configs/M/D.py`` needs no file: :func:`resolve_config` composes it when the path does not exist. A
file that exists is loaded as it is (special runs such as MVLPT's multitask sources), and composed
too when it names its ``dataset`` (a leaf of pure composition: a method's file, a few changes and a
dataset name; the recipe entries apply on top of it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmengine.config import Config

from .. import names
from ..errors import ConfigNotFoundError
from ..names import CONFIGS_ROOT, LEAF_SUFFIXES, METHOD_FILE, check_method, list_methods

__all__ = ["CONFIGS_ROOT", "LEAF_SUFFIXES", "METHOD_FILE", "OVERLAY_DIR", "canonical_config", "check_method",
           "compose_config", "config_exists", "fill_placeholders", "list_methods", "list_overlays", "recipe_keys",
           "resolve_config", "split_leaf"]

OVERLAY_DIR = "_overlays_"
_PLACEHOLDER = re.compile(r"<dataset(?:\.(\w+))?>")


def list_overlays(root: Path = CONFIGS_ROOT) -> list[str]:
    """The overlay names (files of ``configs/_overlays_/``)."""
    return sorted(p.stem for p in (root / OVERLAY_DIR).glob("[!_]*.py"))


def _registered_datasets() -> dict[str, tuple[str, ...]]:
    """The registered datasets and their spellings (a dataset registered at run time counts too)."""
    from ..datasets.builder import dataset_spellings

    return dataset_spellings()


def split_leaf(stem: str) -> tuple[str, list[str]]:
    """A leaf name as its dataset's one name and the overlays its suffix asks for (``imagenet_xd``);
    a ``KeyError`` naming the closest datasets when it names none (:func:`vlprompt.names.split_leaf`)."""
    return names.split_leaf(stem, _registered_datasets())


def fill_placeholders(node: Any, facts: Mapping[str, Any]) -> Any:
    """``node`` with ``"<dataset>"`` and ``"<dataset.KEY>"`` strings replaced by the dataset's facts (a fact of any
    kind for a whole string; a name inside a longer one: ``"work_dirs/x/<dataset.leaf>/learned.safetensors"``)."""
    if isinstance(node, str):
        def fact(match: re.Match) -> Any:
            key = match.group(1) or "name"
            if key not in facts:
                raise ConfigNotFoundError(f"{node}: datasets have no fact {key!r}; facts: {', '.join(sorted(facts))}")
            return facts[key]

        match = _PLACEHOLDER.fullmatch(node)
        if match:
            return fact(match)

        def inline(match: re.Match) -> str:
            value = fact(match)
            if not isinstance(value, str):
                raise ConfigNotFoundError(f"{node}: the dataset fact {match.group(0)} is not a name ({value!r:.80}); "
                                          "only a whole string can take it")
            return value

        return _PLACEHOLDER.sub(inline, node)
    if isinstance(node, Mapping):
        return {k: fill_placeholders(v, facts) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(fill_placeholders(v, facts) for v in node)
    return node


_FAMILY_GROUPS = {"toy": "toy", "imagenet": "imagenet_family"}  # a dataset's family -> its recipe group
RECIPE_GROUPS = (*_FAMILY_GROUPS.values(), "fine_grained")


def recipe_keys(facts: Mapping[str, Any], overlays: Sequence[str]) -> list[str]:
    """The ``recipe`` entries that apply to a run on a dataset with ``facts`` and ``overlays``, in order."""
    group = _FAMILY_GROUPS.get(facts["family"], "fine_grained")
    return [group, facts["name"], *overlays, *(f"{group}+{o}" for o in overlays),
            *(f"{facts['name']}+{o}" for o in overlays)]


def check_recipe_keys(recipe: Mapping[str, Any], overlays: Sequence[str], source: str | os.PathLike) -> None:
    """Every key of a method's ``recipe`` is a group, a dataset's canonical name, an overlay, ``group+overlay`` or
    ``dataset+overlay``:
    a misspelt key (``oxford_pets`` for ``oxford-pets``) would otherwise never apply, silently."""
    datasets = list(_registered_datasets())
    for key in recipe:
        head, plus, tail = str(key).partition("+")
        ok = (head in (*RECIPE_GROUPS, *datasets) and tail in overlays) if plus else \
            key in (*RECIPE_GROUPS, *datasets, *overlays)
        if not ok:
            choices = [*RECIPE_GROUPS, *datasets, *overlays]
            raise ConfigNotFoundError(
                f"{source}: recipe key {key!r} names no dataset group, dataset or overlay"
                f"{names.did_you_mean(names.closest(head if plus else key, choices))} (datasets by their canonical "
                f"names; 'group+overlay' or 'dataset+overlay' for both)")


def _dataset_defaults(cfg: Config, facts: Mapping[str, Any]) -> None:
    """What the dataset decides of a run: its own CLIP (the toy world) and in-loop data loading."""
    if facts.get("backbone"):
        if isinstance(cfg.get("model"), Mapping) and "backbone" in cfg.model:
            cfg.model.backbone = dict(facts["backbone"])
        if "backbone" in cfg:
            cfg.backbone = dict(facts["backbone"])
        for key in ("train_dataloader", "val_dataloader", "test_dataloader", "tune_dataloader"):
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
    check_recipe_keys(recipe, known, source)
    for name in overlays:
        if name not in known:
            raise ConfigNotFoundError(f"unknown overlay {name!r}{names.did_you_mean(names.closest(name, known))}; "
                                      f"overlays: {', '.join(known)}")
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


def canonical_config(path: str | os.PathLike) -> str:
    """``path`` if it is a file, else the composed run it names, its leaf the dataset's one name
    (``configs/coop/toy-shapes.py`` is ``configs/coop/toy_shapes.py``); a path that names neither is a
    :class:`~vlprompt.errors.ConfigNotFoundError` naming the closest config files and composable runs
    (:func:`vlprompt.names.check_config_path`, with the registered datasets)."""
    return os.fspath(path) if Path(path).is_file() else names.check_config_path(path, _registered_datasets())


def config_exists(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a config file or a run that :func:`resolve_config` composes (no file is read)."""
    try:
        canonical_config(path)
    except ConfigNotFoundError:
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
            root = names.configs_root(path) or CONFIGS_ROOT
            return _compose(cfg, path, cfg.dataset, overlays, root, path)
        if overlays:
            raise ConfigNotFoundError(f"{path} is a whole run: overlays ({', '.join(overlays)}) apply to composed runs")
        return cfg
    path = Path(canonical_config(path))  # refused here, naming the closest configs, when it names no run
    root = names.configs_root(path)
    method = Path(os.path.abspath(path)).parent.relative_to(root).as_posix()
    dataset, leaf_overlays = split_leaf(path.stem)
    return compose_config(method, dataset, [*leaf_overlays, *overlays], root=root, filename=path)
