"""Load a config with its command-line overrides, checked before anything is built.

``--cfg-options`` may change a key the config has (with a value of the same kind), or add a key
that something will read: one of :data:`ADDABLE_KEYS` at the top level, or an argument of the
class or function a dict's ``type`` names (``optim_wrapper.optimizer.nesterov=True`` for SGD,
``train_dataloader.dataset.transform=test`` for the dataset builder). Anything else is a typo that
would otherwise be ignored (``randomnes.seed=2`` trains with the default seed) or fail deep inside
a constructor, and is refused naming the key and the closest existing ones.
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmengine.config import Config

from ..errors import ConfigError
from ..io import (  # noqa: F401  (re-exported: the names this module had)
    config_differences,
    file_digest,
    flatten_config,
    show_value,
)
from ..registry import check_config_names
from .checkpoint import value_kind

#: top-level keys a config need not have, that the tools and the runner read
ADDABLE_KEYS = ("load_from", "resume", "data_root", "work_dir", "experiment_name")
#: dicts without a ``type`` whose consumer is known: the arguments it takes may be added
_CONSUMERS = {"model.backbone": "vlprompt.backbones.build_clip"}
#: settings that must be whole numbers of at least this value, wherever they appear in a config
_MINIMUM = {"batch_size": 1, "max_epochs": 1, "max_iters": 1, "num_workers": 0, "interval": 1, "warmup_epochs": 0}


def _child(node: Any, part: str) -> tuple[bool, Any]:
    if isinstance(node, (list, tuple)):
        return (True, node[int(part)]) if part.isdigit() and int(part) < len(node) else (False, None)
    if hasattr(node, "keys") and part in node:
        return True, node[part]
    return False, None


def _keys(node: Any) -> list[str]:
    if isinstance(node, (list, tuple)):
        return [str(i) for i in range(len(node))]
    return [str(k) for k in node] if hasattr(node, "keys") else []


def _consumer(parent: Any, parent_key: str) -> Any:
    """The class or function that receives ``parent``'s keys, if vlprompt can tell."""
    kind = parent.get("type") if hasattr(parent, "get") else None
    if isinstance(kind, str):
        from ..registry import DATASETS, LEARNERS, find_registered

        for registry in (LEARNERS, DATASETS):
            found = find_registered(registry, kind)
            if found is not None:
                return found
        return None
    if kind is None and parent_key in _CONSUMERS:
        import importlib

        module, name = _CONSUMERS[parent_key].rsplit(".", 1)
        return getattr(importlib.import_module(module), name)
    return kind


def _takes(consumer: Any, name: str) -> bool:
    try:
        params = inspect.signature(consumer).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def check_option_key(cfg: Config, key: str, path: str | os.PathLike) -> None:
    """Refuse a ``--cfg-options`` key the config does not have and nothing would read."""
    parts = key.split(".")
    node: Any = cfg
    for depth, part in enumerate(parts):
        found, child = _child(node, part)
        if found:
            node = child
            continue
        where = ".".join(parts[:depth])
        last = depth == len(parts) - 1
        if not where and last and part in ADDABLE_KEYS:
            return
        consumer = _consumer(node, where) if last and where else None
        if consumer is not None and _takes(consumer, part):
            return
        close = difflib.get_close_matches(part, _keys(node), n=3, cutoff=0.6)
        hint = f" (closest: {', '.join(close)})" if close else ""
        takes = f", and {getattr(consumer, '__name__', consumer)} takes no argument {part!r}" if consumer else ""
        at = f"{where} has" if where else "has"
        addable = "" if where else f"; keys that may be added at the top: {', '.join(ADDABLE_KEYS)}"
        raise ConfigError(f"--cfg-options {key}: {path} {at} no key {part!r}{takes}{hint}{addable}")


def check_options(cfg: Config, options: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse ``--cfg-options`` keys nothing reads, values of another kind than the config's own
    value at that key (``batch_size=abc``) and counts out of range (``max_epochs=0``), naming the
    key and the value."""
    for key, value in options.items():
        check_option_key(cfg, key, path)
        exists, current = True, cfg
        for part in key.split("."):
            exists, current = _child(current, part)
            if not exists:
                break
        leaf = key.rsplit(".", 1)[-1]
        if exists and current is not None and value is not None:
            old, new = value_kind(current), value_kind(value)
            if old != new:
                raise ConfigError(f"--cfg-options {key}={value!r}: {path} has a {old} there ({current!r}), not a {new}")
            if old == "number" and isinstance(current, int) and not isinstance(value, int) and leaf in _MINIMUM:
                raise ConfigError(f"--cfg-options {key}={value!r}: {leaf} must be a whole number")
        if leaf in _MINIMUM and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and (value < _MINIMUM[leaf] or value != int(value)):
            raise ConfigError(f"--cfg-options {key}={value!r}: {leaf} must be a whole number >= {_MINIMUM[leaf]}")
        if leaf == "lr" and isinstance(value, (int, float)) and not (0 < value < float("inf")):
            raise ConfigError(f"--cfg-options {key}={value!r}: a learning rate must be positive and finite")
        check_option_value(key, value)


def _names_a_backbone(key: str) -> bool:
    """``model.backbone.name``, ``adapter.teacher.name``, ``adapter.teacher.0.name``: keys that name a CLIP."""
    parts = key.split(".")
    return len(parts) >= 2 and parts[-1] == "name" and any(p in ("backbone", "teacher") for p in parts[-3:-1])


def check_option_value(key: str, value: Any) -> None:
    """Refuse a ``--cfg-options`` value that no run can use, naming the key and the value, before anything
    is built: a ``num_shots`` that is not a whole number >= 1 or None, a ``subsample`` other than all, base
    or novel, a backbone or teacher ``name`` that is no registered architecture (each would otherwise end
    in a traceback from the dataset reader or the model builder)."""
    leaf = key.rsplit(".", 1)[-1]
    try:
        if leaf == "num_shots":
            from ..datasets.protocol import check_num_shots

            check_num_shots(value, "num_shots")
        elif leaf == "subsample":
            from ..datasets.protocol import normalize_subsample

            if value is not None and not isinstance(value, str):
                raise ValueError("subsample must be one of 'all', 'base', 'novel' (or 'new')")
            normalize_subsample(value)
        elif _names_a_backbone(key):
            from ..backbones import get_arch

            if not isinstance(value, str):
                raise ValueError("a backbone is named by a string")
            get_arch(value)
    except (KeyError, ValueError) as err:
        detail = err.args[0] if err.args and isinstance(err.args[0], str) else str(err)
        raise ConfigError(f"--cfg-options {key}={value!r}: {detail}") from None


def run_name(path: str | os.PathLike, overlays: tuple[str, ...] | list[str] = ()) -> str:
    """The name of the run ``path`` (with ``overlays``) describes: method, variant and dataset.

    Inside a ``configs`` folder it is the path below it (``gram/coop/toy_hues``: GRAM over CoOp, not
    ``coop``), an overlay adding its leaf suffix (``maple/imagenet`` + cross_dataset is
    ``maple/imagenet_xd``, as the leaf file is named) or ``_<overlay>``; elsewhere ``<folder>/<file stem>``.
    """
    from ..names import LEAF_SUFFIXES, configs_root

    path = Path(path)
    root = configs_root(path.resolve())
    name = (path.resolve().with_suffix("").relative_to(root).as_posix() if root is not None
            else f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem)
    suffix_of = {overlay: suffix for suffix, overlay in LEAF_SUFFIXES.items()}
    for overlay in overlays:
        name += suffix_of.get(overlay, f"_{overlay}")
    return name


def default_work_dir(path: str | os.PathLike, overlays: tuple[str, ...] | list[str] = ()) -> str:
    """``work_dirs/<run name>`` (:func:`run_name`): two methods, or two variants of one, never share one."""
    return str(Path("work_dirs") / run_name(path, overlays))


def load_config(path: str | os.PathLike, work_dir: str | None = None, options: dict | None = None,
                overlays: tuple[str, ...] | list[str] = ()) -> Config:
    """A config file with checked command-line overrides and its work dir
    (:func:`default_work_dir` unless given or set in the config)."""
    from .compose import canonical_config, resolve_config

    path = canonical_config(path)  # by its dataset's one name: configs/coop/toy-shapes.py is toy_shapes.py
    cfg = resolve_config(path, overlays)  # a file, or configs/<method>/<dataset>.py composed (engine.compose)
    if options:
        check_options(cfg, options, path)
        cfg.merge_from_dict(options)
    check_config_names(cfg._cfg_dict._to_lazy_dict(), str(path))  # names from a file resolve among registered ones
    cfg.work_dir = work_dir or cfg.get("work_dir") or default_work_dir(path, overlays)
    return cfg


VOLATILE_KEYS = ("work_dir", "log_level", "default_hooks.logger", "experiment_name", "tensorboard")
"""Config keys left out of a run's record: where it lives, what its logs are called and how often and where it
logs do not change its result."""


def json_plain(obj: Any) -> Any:
    """``obj`` as JSON values (dicts with string keys, lists, numbers, strings, None); classes and
    functions become their dotted name, anything else its ``repr``."""
    if isinstance(obj, Mapping):
        return {str(k): json_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "__qualname__"):
        return f"{getattr(obj, '__module__', '')}.{obj.__qualname__}"
    return repr(obj)


def plain_config(cfg: Config) -> dict[str, Any]:
    """The config a run trains with, as plain JSON less :data:`VOLATILE_KEYS`, with the digests of the
    ``.safetensors`` files it names (``input_files``): what a run's record compares. Builds nothing."""
    plain = json_plain(cfg.to_dict())
    for key in VOLATILE_KEYS:
        *parents, leaf = key.split(".")
        node = plain
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    files = input_file_digests(plain)
    if files:
        plain["input_files"] = files
    return json.loads(json.dumps(plain))  # exactly what a JSON round trip gives back


def input_file_digests(plain: Mapping[str, Any]) -> dict[str, str]:
    """``{dotted key: sha256}`` of every file a config names by path (a GRAM file, ``load_from``, a
    knowledge JSON, a backbone weights file, a split file; ``key[i]`` for one in a list): a run is reused
    only while the files it started from hold the same bytes, not just the same paths (re-meta-training
    rewrites ``gram.safetensors`` in place, a knowledge file is edited). A relative path is looked up
    under the data root (``data_root``, else ``$VLPROMPT_DATA``), the working folder, then the
    repository; folders such as ``data_root`` are not hashed."""
    data_root = plain.get("data_root") or os.environ.get("VLPROMPT_DATA")
    roots = [Path(data_root).expanduser()] if isinstance(data_root, str) and data_root else []
    roots += [Path.cwd(), Path(__file__).resolve().parents[2]]
    digests = {}
    for key, value in flatten_config(dict(plain)).items():
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            path = _named_file(item, roots)
            if path is not None:
                digests[key if index is None else f"{key}[{index}]"] = file_digest(path)
    return digests


def _named_file(value: Any, roots: list[Path]) -> Path | None:
    """The regular file a config string names (absolute, or relative to one of ``roots``: the data
    root, the working folder, the repository), or None: words, tags, URLs, folders and devices are not
    files."""
    if not isinstance(value, str) or not value or "\n" in value or len(value) > 4096 or "://" in value:
        return None
    path = Path(value).expanduser()
    for candidate in [path] if path.is_absolute() else [root / path for root in roots]:
        try:
            if candidate.is_file():
                return candidate
        except OSError:  # a name too long for the file system, or a loop of links
            return None
    return None


