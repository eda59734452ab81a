"""vlprompt's registries, children of mmengine's roots so that configs can name vlprompt classes.

Each registry imports its ``locations`` the first time it is searched, so a config never needs an
import list to fill it.

Names resolve only among registered classes. mmengine's ``Registry.get`` falls back to importing
whatever a name spells (``"logging.basicConfig"``, ``"torch.hub.load"``, or ``"<scope>.registry"``
for an unknown scope), so a name read from a checkpoint's metadata or a config value would run
code vlprompt never registered. vlprompt enforces the rule at its own entry points and leaves
mmengine's registries as they are: its registries' ``get`` walks the registry tree and imports
nothing (:func:`registered_get`), whatever reads a name from a checkpoint or a GRAM file goes
through them, and :func:`vlprompt.engine.load_config` refuses a config whose ``type`` strings no
registry holds (:func:`check_config_names`); a name that is not registered raises
:class:`UnregisteredNameError`.

The library without the trainer (``vlprompt.load_prompted_clip``, reading a ``learned.safetensors``)
does not import mmengine: :class:`LazyRegistry` holds the registrations, resolves names among them
with the same rule, and becomes an mmengine registry (a child of mmengine's root, as before) the
first time anything asks for mmengine's side of it: :func:`use_mmengine`, called by
:mod:`vlprompt.engine` and by whatever builds through mmengine's registries, or at once when
mmengine is already imported.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:
    from mmengine.registry import Registry


class UnregisteredNameError(UserError, KeyError):
    """A name that no registry holds (vlprompt never imports a name to resolve it)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def _registered_ids(*roots: Registry) -> set[int]:
    """Every object registered anywhere in mmengine's registry trees and ``roots``' (by identity)."""
    import mmengine.registry
    from mmengine.registry import Registry

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
    registry = _mmengine_side(registry)
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
    registry = _mmengine_side(registry)
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
        raise _unregistered(registry.name, key, registered_names(registry))
    return found


def _registry_roots() -> list[Registry]:
    """Every root of mmengine's registry trees (vlprompt's registries are children of them, or roots)."""
    import mmengine.registry
    from mmengine.registry import Registry

    use_mmengine()
    roots = {id(r._get_root_registry()): r._get_root_registry() for r in vars(mmengine.registry).values()
             if isinstance(r, Registry)}
    for registry in (DATASETS, LEARNERS, ADAPTERS):
        root = registry.mmengine_registry()._get_root_registry()
        roots.setdefault(id(root), root)
    return list(roots.values())


def registered_anywhere(key: str) -> bool:
    """Whether some registry (mmengine's or vlprompt's, any scope) holds ``key``; nothing is imported."""
    if any(key in registry for registry in (SAMPLERS, REGULATORS, CLIPS)):  # vlprompt's own, outside mmengine's
        return True
    stack = _registry_roots()
    while stack:
        node = stack.pop()
        if find_registered(node, key) is not None:
            return True
        stack.extend(node._children.values())
    return False


def check_config_names(node: Any, source: str, where: str = "") -> None:
    """Refuse a config (``source``) in which a ``type`` string names nothing registered.

    vlprompt's entry point for configs (:func:`vlprompt.engine.load_config` calls it after the
    ``--cfg-options`` are merged): mmengine's ``Registry.get`` would import whatever such a name
    spells (``"os.system"``, ``"torch.hub.load"``), so every name a file gives resolves among
    registered names first, or the config is refused naming the key. mmengine itself is left as it is.
    """
    if isinstance(node, dict):  # lazily imported classes (a file's own imports) are not names: left alone
        kind = node.get("type")
        if isinstance(kind, str) and not registered_anywhere(kind):
            raise UnregisteredNameError(f"{source}: {where + '.' if where else ''}type = {kind!r} is not registered "
                                        "anywhere (vlprompt resolves names only among registered classes and never "
                                        "imports a name it reads)")
        for key, value in node.items():
            check_config_names(value, source, f"{where}.{key}" if where else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            check_config_names(value, source, f"{where}.{i}")


def _unregistered(name: str, key: str, names: list[str]) -> UnregisteredNameError:
    close = difflib.get_close_matches(key, names, n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    return UnregisteredNameError(
        f"{key!r} is not a registered {name} (vlprompt resolves names only among registered "
        f"classes and never imports a name it reads){hint}"
    )


class LazyRegistry:
    """A vlprompt registry that needs no mmengine until mmengine's side of it is asked for.

    Until then it holds the registrations itself (``register_module``, ``module_dict``, ``get``,
    ``in``, ``import_from_location``: mmengine's behaviour, with names resolved only among the
    registered objects, a name or a ``vlprompt.``-scoped name or the dotted path of a registered
    object already imported). On :func:`use_mmengine` it becomes the mmengine ``Registry(name,
    parent=mmengine.registry.<parent>, scope='vlprompt', locations=...)`` it was before, holding the
    same objects under the same names in the same order, and delegates everything to it.
    """

    def __init__(self, name: str, parent: str | None = None, locations: list[str] | None = None) -> None:
        self.name = name
        self.scope = "vlprompt"
        self._parent_name = parent
        self._locations = list(locations or [])
        self._imported = False
        self._light: dict[str, Any] = {}
        self._mm: Registry | None = None

    # ------------------------------------------------------------------ mmengine's side
    def mmengine_registry(self) -> Registry:
        """The mmengine registry this one is (made on first use, with every registration so far)."""
        if self._mm is None:
            use_mmengine()
        assert self._mm is not None
        return self._mm

    def _bind(self) -> None:
        import mmengine.registry

        parent = getattr(mmengine.registry, self._parent_name) if self._parent_name else None
        mm = mmengine.registry.Registry(self.name, parent=parent, scope=self.scope, locations=self._locations)
        if self._imported:
            mm._imported = True
        for key, obj in self._light.items():
            mm.register_module(name=key, module=obj, force=True)
        self._mm = mm

    def __getattr__(self, attr: str) -> Any:  # anything else is mmengine's (build, children, parent, ...)
        if attr.startswith("__") or attr in ("_mm", "_light", "_parent_name", "_locations", "_imported"):
            raise AttributeError(attr)
        return getattr(self.mmengine_registry(), attr)

    # ------------------------------------------------------------------ without mmengine
    def register_module(self, name: str | list[str] | None = None, force: bool = False,
                        module: Any = None) -> Any:
        """mmengine's ``register_module``: as a decorator, or with ``module=``."""
        if self._mm is not None:
            return self._mm.register_module(name=name, force=force, module=module)
        if not isinstance(force, bool):
            raise TypeError(f"force must be a boolean, but got {type(force)}")
        if not (name is None or isinstance(name, str) or (isinstance(name, list)
                                                          and all(isinstance(n, str) for n in name))):
            raise TypeError(f"name must be None, an instance of str, or a sequence of str, but got {type(name)}")

        def register(obj: Any) -> Any:
            if not callable(obj):
                raise TypeError(f"module must be a class or a function, but got {type(obj)}")
            if self._mm is not None:
                return self._mm.register_module(name=name, force=force, module=obj)
            for key in [obj.__name__] if name is None else [name] if isinstance(name, str) else name:
                if not force and key in self._light:
                    raise KeyError(f"{key} is already registered in {self.name} at {self._light[key].__module__}")
                self._light[key] = obj
            return obj

        return register if module is None else register(module)

    @property
    def module_dict(self) -> dict[str, Any]:
        return self._mm.module_dict if self._mm is not None else self._light

    @property
    def _module_dict(self) -> dict[str, Any]:
        return self._mm._module_dict if self._mm is not None else self._light

    def import_from_location(self) -> None:
        if self._mm is not None:
            self._mm.import_from_location()
            return
        if not self._imported:
            self._imported = True
            for location in self._locations:
                importlib.import_module(location)

    def _find(self, key: str) -> Any:
        self.import_from_location()
        if "." in key:
            obj = _loaded_object(key)
            if obj is not None and any(obj is v for v in self._light.values()):
                return obj
            scope, _, rest = key.partition(".")
            return self._light.get(rest) if scope == self.scope else None
        return self._light.get(key)

    def get(self, key: str) -> Any:
        """The object registered as ``key``; an unregistered name is an error, never an import."""
        if self._mm is not None:
            return registered_get(self._mm, key)
        if not isinstance(key, str):
            raise TypeError(f"a registry key must be a str, got {type(key).__name__}: {key!r}")
        found = self._find(key)
        if found is None:
            raise _unregistered(self.name, key, sorted(self._light))
        return found

    def __contains__(self, key: object) -> bool:
        if self._mm is not None:
            return isinstance(key, str) and find_registered(self._mm, key) is not None
        return isinstance(key, str) and self._find(key) is not None

    def __len__(self) -> int:
        return len(self.module_dict)

    def __repr__(self) -> str:
        if self._mm is not None:
            return repr(self._mm)
        return f"LazyRegistry(name={self.name}, items={sorted(self._light)})"


def _mmengine_side(registry: Any) -> Registry:
    return registry.mmengine_registry() if isinstance(registry, LazyRegistry) else registry


_ON_MMENGINE: list[Callable[[], None]] = []
_USING_MMENGINE = False


def on_mmengine(action: Callable[[], None]) -> None:
    """Run ``action`` (a registration in one of mmengine's own registries) now if vlprompt's
    registries have joined mmengine's, else when they do."""
    if _USING_MMENGINE:
        action()
    else:
        _ON_MMENGINE.append(action)


def use_mmengine() -> None:
    """Join vlprompt's registries to mmengine's (once): install the registered-names-only lookup,
    turn each :class:`LazyRegistry` into its mmengine registry, run the :func:`on_mmengine` actions."""
    global _USING_MMENGINE
    if _USING_MMENGINE:
        return
    _USING_MMENGINE = True
    for registry in (DATASETS, LEARNERS, ADAPTERS):
        if registry._mm is None:
            registry._bind()
    while _ON_MMENGINE:
        _ON_MMENGINE.pop(0)()


# CLIP architectures (``vlprompt.backbones.archs``): each entry is a ``ClipArch`` that builds itself when called.
CLIPS = LazyRegistry("CLIP architecture", locations=["vlprompt.backbones.archs"])

# Benchmark readers and the generic split-file reader (``vlprompt.datasets``).
DATASETS = LazyRegistry("dataset", parent="DATASETS", locations=["vlprompt.datasets"])

# Prompt learners (``vlprompt.learners``): CoOp, CoCoOp, MaPLe, ... built by name from configs.
LEARNERS = LazyRegistry("learner", parent="MODELS", locations=["vlprompt.learners"])

# Test-time adapters (``vlprompt.adapters``): TPT, RLCF, built by name from configs. A root of its own:
# mmengine's MODELS already has vlprompt's child (LEARNERS), and a parent holds one child per scope.
ADAPTERS = LazyRegistry("adapter", locations=["vlprompt.adapters"])

# Active-learning samplers (``vlprompt.active.samplers``): ``fn(pool, n, rng) -> pool indices``, by name.
SAMPLERS = LazyRegistry("active-learning sampler", locations=["vlprompt.active.samplers"])

# GRAM's gradient regulators (``vlprompt.meta.regulator``), by name; a meta-trained file names one of them.
REGULATORS = LazyRegistry("gradient regulator", locations=["vlprompt.meta.regulator"])

if "mmengine" in sys.modules:  # mmengine is here anyway: be its registries' children from the start
    use_mmengine()
