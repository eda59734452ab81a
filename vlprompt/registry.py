"""vlprompt's registries, children of mmengine's roots so that configs can name vlprompt classes.

Each registry imports its ``locations`` the first time it is searched, so a config never needs an
import list to fill it.

Names resolve only among registered classes. mmengine's ``Registry.get`` falls back to importing
whatever a name spells (``"logging.basicConfig"``, ``"torch.hub.load"``, or ``"<scope>.registry"``
for an unknown scope), so a name read from a checkpoint's metadata or a config value would run
code vlprompt never registered. Importing this module replaces that lookup, for every mmengine
registry in the process, by one that walks the registry tree and imports nothing
(:func:`registered_get`); a name that is not registered raises :class:`UnregisteredNameError`.
"""

from __future__ import annotations

import difflib
import sys

import mmengine.registry
from mmengine.registry import Registry

from .errors import UserError


class UnregisteredNameError(UserError, KeyError):
    """A name that no registry holds (vlprompt never imports a name to resolve it)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def _registered_ids(*roots: Registry) -> set[int]:
    """Every object registered anywhere in mmengine's registry trees and ``roots``' (by identity)."""
    stack = [*roots, *(v for v in vars(mmengine.registry).values() if isinstance(v, Registry))]
    seen: set[int] = set()
    found: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        found.update(id(obj) for obj in node._module_dict.values())
        stack.extend(node._children.values())
    return found


def _loaded_object(path: str) -> object | None:
    """The object a dotted path names in a module that is already imported, or ``None``; importing
    nothing (pure-Python configs write the classes they import as such paths)."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        obj = sys.modules.get(".".join(parts[:cut]))
        if obj is None:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


def find_registered(registry: Registry, key: str) -> type | None:
    """The object registered as ``key`` in ``registry``'s tree, or ``None``.

    ``key`` is a name (``"coop"``), a scoped name (``"mmengine.SGD"``), or the dotted path of an
    object that some registry holds (``"torch.optim.sgd.SGD"``, as a pure-Python config writes
    what it imported). Only registries already in the tree are searched, and nothing is imported
    except the registries' own declared ``locations``.
    """
    registry.import_from_location()
    if "." in key:
        obj = _loaded_object(key)
        if obj is not None and id(obj) in _registered_ids(registry._get_root_registry()):
            return obj  # type: ignore[return-value]
    scope, name = registry.split_scope_key(key)
    if scope is None or scope == registry.scope:
        node: Registry | None = registry
        while node is not None:
            if name in node._module_dict:
                return node._module_dict[name]
            node = node.parent if scope is None else None
        return None
    if scope in registry._children:
        return find_registered(registry._children[scope], name)
    root = registry._get_root_registry()
    if root is not registry and (scope == root.scope or scope in root._children):
        return find_registered(root, key)
    return None


def registered_names(registry: Registry) -> list[str]:
    """Every name ``registry`` resolves without a scope: its own and its ancestors'."""
    registry.import_from_location()
    names: set[str] = set()
    node: Registry | None = registry
    while node is not None:
        names.update(node._module_dict)
        node = node.parent
    return sorted(names)


def registered_get(registry: Registry, key: str) -> type | None:
    """``Registry.get`` restricted to registered names: an unregistered name is an error, never an import."""
    if not isinstance(key, str):
        raise TypeError(f"a registry key must be a str, got {type(key).__name__}: {key!r}")
    found = find_registered(registry, key)
    if found is None:
        close = difflib.get_close_matches(key, registered_names(registry), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnregisteredNameError(
            f"{key!r} is not a registered {registry.name} (vlprompt resolves names only among registered "
            f"classes and never imports a name it reads){hint}"
        )
    return found


def _install() -> None:
    if getattr(Registry.get, "_vlprompt_registered_only", False):
        return
    registered_get._vlprompt_registered_only = True  # type: ignore[attr-defined]
    Registry.get = registered_get  # type: ignore[method-assign]
    Registry.__contains__ = lambda self, key: isinstance(key, str) and find_registered(self, key) is not None


_install()

# Benchmark readers and the generic split-file reader (``vlprompt.datasets``).
DATASETS = Registry("dataset", parent=mmengine.registry.DATASETS, locations=["vlprompt.datasets"])

# Prompt learners (``vlprompt.learners``): CoOp, CoCoOp, MaPLe, ... built by name from configs.
LEARNERS = Registry("learner", parent=mmengine.registry.MODELS, locations=["vlprompt.learners"])

# Test-time adapters (``vlprompt.adapters``): TPT, RLCF, built by name from configs. A root of its own:
# mmengine's MODELS already has vlprompt's child (LEARNERS), and a parent holds one child per scope.
ADAPTERS = Registry("adapter", locations=["vlprompt.adapters"])

# Active-learning samplers (``vlprompt.active.samplers``): ``fn(pool, n, rng) -> pool indices``, by name.
SAMPLERS = Registry("active-learning sampler", locations=["vlprompt.active.samplers"])

# GRAM's gradient regulators (``vlprompt.meta.regulator``), by name; a meta-trained file names one of them.
REGULATORS = Registry("gradient regulator", locations=["vlprompt.meta.regulator"])
