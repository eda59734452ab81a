"""Read what training wrote (learned parameters + metadata) without executing code from the file,
and rebuild a trained learner from it.

Every name a file holds is checked against vlprompt's registries before anything is built from it:
a checkpoint can choose among registered learners and architectures, never name code to run.

Nor can it name a file to read: a checkpoint carries the class descriptions it was trained with as
their text (``learner.knowledge_text`` / ``learner.descriptions_text``, which every learner records);
the description source beside it (``learner.knowledge`` / ``learner.descriptions``: a path,
``dict(file=...)``, ``dict(dataset=...)``) is only the record of where that text came from and is never
read. A checkpoint that names a source without its text (one written before the text was recorded) is
refused naming the file and the key: rebuild the learner from its config and load the file into it
(:func:`load_learned_into`), or train again to re-save it. And it cannot ask for sizes that would
allocate without bound: every size hyper-parameter (:data:`SIZE_KEYS`) is at most the largest
dimension of the file's own tensors, checked before anything is built, and the learners bound the
rest by what the backbone allows (context vectors fit the text context, image prompts the image
sequence; :mod:`vlprompt.learners.common`).

This is the library side of checkpoints: it imports neither mmengine nor the test-time adapters
(:mod:`vlprompt.engine.checkpoint` re-exports it and adds what training needs: resuming, starting
from another run's prompts, the work-dir checks).
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .backbones import (
    CheckpointError,
    build_clip,
    check_same_weights,
    check_tensor_values,
    list_clips,
    read_safetensors,
)
from .learners import PromptLearner, build_learner, list_learners
from .registry import LEARNERS

__all__ = ["BACKBONE_KEYS", "DESCRIPTION_KEYS", "SIZE_KEYS", "check_sizes", "check_state_fits", "learner_spec",
           "load_learned_into", "load_learner", "read_learned", "read_vlprompt_safetensors", "torch_load_plain",
           "value_kind"]

#: the keys of a checkpoint's ``backbone`` metadata that are passed on to ``build_clip``
BACKBONE_KEYS = ("name", "pretrained", "quick_gelu", "text_checkpointing", "vision_checkpointing")
#: learner hyper-parameters that name a description source; ``<key>_text`` holds the text a checkpoint carries
DESCRIPTION_KEYS = ("knowledge", "descriptions")
#: learner hyper-parameters that size learned tensors (context vectors, prompt tokens, a shared space's width)
SIZE_KEYS = ("n_ctx", "n_ctx_text", "n_ctx_vision", "project_dim", "rank", "cache_size")
_PLAIN = (str, int, float, bool, type(None))


def torch_load_plain(source: str | os.PathLike | Any, name: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` of a path or file object, with every failure a
    :class:`CheckpointError` naming ``name`` (and never advising to lower the guard)."""
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{name}: refusing to load: the file holds Python objects beyond tensors and plain data, and "
            f"loading it would execute code from it"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{name}: not a readable checkpoint (truncated or corrupt?): {detail}") from None


def read_vlprompt_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], Any]:
    """The tensors of a safetensors file vlprompt wrote, and its ``vlprompt`` metadata parsed from JSON
    (``{}`` when absent; a :class:`CheckpointError` naming the file when it is not JSON)."""
    state, raw = read_safetensors(path)
    try:
        return state, json.loads(raw.get("vlprompt", "{}"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: metadata key 'vlprompt' is not JSON ({err})") from None


def read_learned(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The learner's state and the run metadata from ``learned.safetensors`` or an ``epoch_N.pth``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return read_vlprompt_safetensors(path)
    ckpt = torch_load_plain(path, path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a vlprompt training checkpoint (no state_dict)")
    prefix = "learner."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    return state, ckpt.get("vlprompt", {})


def value_kind(value: Any) -> str:
    """``bool``, ``number``, ``string``, ``list``, ``dict`` or the type name: what a setting must keep
    when a file or a command line replaces it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if hasattr(value, "keys"):
        return "dict"
    return type(value).__name__


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return isinstance(value, _PLAIN)


def _kinds(param: inspect.Parameter) -> set[str]:
    """The kinds of value (:func:`value_kind`) a learner's argument takes: its default's, and a list where its
    annotation also takes a sequence (ZeroShotCLIP's ``templates: str | Sequence[str]``)."""
    kinds = {value_kind(param.default)}
    if any(word in str(param.annotation) for word in ("Sequence", "list", "tuple")):
        kinds.add("list")
    return kinds


def learner_spec(meta: Any, path: str | os.PathLike) -> tuple[str, dict[str, Any], dict[str, Any], list[str]]:
    """Check a checkpoint's metadata against the registries: ``(learner name, hyper-parameters,
    backbone arguments, class names)``. Anything else is refused naming the file and the key."""
    def bad(key: str, value: Any, why: str) -> CheckpointError:
        return CheckpointError(f"{path}: metadata key {key!r} = {value!r} {why}")

    if not isinstance(meta, dict) or not meta.get("learner") or not meta.get("backbone"):
        raise CheckpointError(f"{path}: no vlprompt metadata (backbone, learner) in the checkpoint")
    learner, backbone, names = meta["learner"], meta["backbone"], meta.get("class_names")
    if not isinstance(learner, dict):
        raise bad("learner", learner, "is not a mapping")
    hparams = dict(learner)
    name = hparams.pop("type", None)
    if not isinstance(name, str) or name not in LEARNERS.module_dict:
        raise bad("learner.type", name, f"is not a registered learner (registered: {', '.join(list_learners())})")
    accepted = inspect.signature(LEARNERS.module_dict[name].__init__).parameters
    for key, value in hparams.items():
        if key in ("self", "backbone", "class_names") or key not in accepted:
            raise bad(f"learner.{key}", value, f"is not a hyper-parameter of learner {name!r}")
        if not _plain(value):
            raise bad(f"learner.{key}", value, "is not plain data (str, number, bool, list, dict)")
        default = accepted[key].default
        if default not in (None, inspect.Parameter.empty) and value is not None \
                and value_kind(value) not in _kinds(accepted[key]):
            raise bad(f"learner.{key}", value, f"is a {value_kind(value)}; learner {name!r} takes a "
                                               f"{' or a '.join(sorted(_kinds(accepted[key])))} there")
    if not isinstance(backbone, dict):
        raise bad("backbone", backbone, "is not a mapping")
    for key, value in backbone.items():
        if key not in BACKBONE_KEYS:
            raise bad(f"backbone.{key}", value, f"is not a backbone setting ({', '.join(BACKBONE_KEYS)})")
    if backbone.get("name") not in list_clips():
        raise bad("backbone.name", backbone.get("name"),
                  f"is not a registered architecture (registered: {', '.join(list_clips())})")
    if not isinstance(backbone.get("pretrained"), (str, type(None))):
        raise bad("backbone.pretrained", backbone["pretrained"], "is not a tag, a path or null")
    if not isinstance(backbone.get("quick_gelu"), (bool, type(None))):
        raise bad("backbone.quick_gelu", backbone["quick_gelu"], "is not a boolean")
    for key in ("text_checkpointing", "vision_checkpointing"):
        if not isinstance(backbone.get(key, False), bool):
            raise bad(f"backbone.{key}", backbone[key], "is not a boolean")
    if names is not None and (not isinstance(names, list) or not names
                              or not all(isinstance(n, str) for n in names)):
        raise bad("class_names", names, "is not a non-empty list of strings")
    _check_descriptions(hparams, path)
    return name, hparams, dict(backbone), list(names or [])


def _check_descriptions(hparams: dict[str, Any], path: str | os.PathLike) -> None:
    """A description source in the metadata comes with its text (then it is only a record and is never
    read); a source without its text, or text that is not ``{class: sentence or [sentences]}``, is refused
    naming the file and the key."""
    for key in DESCRIPTION_KEYS:
        source, text = hparams.get(key), hparams.get(f"{key}_text")
        if text is not None:
            if not isinstance(text, dict):
                raise CheckpointError(f"{path}: metadata key 'learner.{key}_text' is not a mapping "
                                      f"{{class: [sentences]}} (a {type(text).__name__})")
            for cls, sentences in text.items():
                if not (isinstance(sentences, str) or (isinstance(sentences, list)
                                                       and all(isinstance(t, str) for t in sentences))):
                    raise CheckpointError(f"{path}: metadata key 'learner.{key}_text' holds {cls!r}: "
                                          f"{type(sentences).__name__}, not a sentence or a list of sentences")
        elif source is not None:
            shown = repr(source) if len(repr(source)) <= 200 else repr(source)[:200] + "..."
            raise CheckpointError(
                f"{path}: metadata key 'learner.{key}' = {shown} names a description source, which loading "
                f"does not read, and the checkpoint carries no text of it (learner.{key}_text; written before "
                f"checkpoints recorded it): build the learner from its config and load the file into it "
                f"(vlprompt.learned.load_learned_into), or train again to re-save it")


def check_sizes(hparams: dict[str, Any], state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Every size hyper-parameter (:data:`SIZE_KEYS`) of a checkpoint's metadata is a whole number between 0
    and the largest dimension of the file's own tensors (a learner with a larger one would have written
    larger tensors): checked before anything is built, so no metadata makes loading allocate without bound."""
    largest = max((max(t.shape, default=1) for t in state.values()), default=0)
    for key in SIZE_KEYS:
        value = hparams.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CheckpointError(f"{path}: metadata key 'learner.{key}' = {value!r} is not a whole number >= 0")
        if value > largest:
            raise CheckpointError(f"{path}: metadata key 'learner.{key}' = {value} is larger than every dimension "
                                  f"of the file's tensors (at most {largest}): the learner it names did not write "
                                  f"this file")


def check_state_fits(learner: PromptLearner, state: dict[str, torch.Tensor], path: str | os.PathLike,
                     file_backbone: str | None = None) -> None:
    """The file's parameters are the learner's, with the learner's shapes, floating and finite; otherwise
    an error that names the file, the parameter (and both backbones for a shape that does not fit)."""
    expected = learner.state_dict()
    if set(state) != set(expected):
        raise CheckpointError(
            f"{path}: parameters {sorted(state)} do not match the configured learner's {sorted(expected)}"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            arch = learner.backbone.arch
            why = (f"the checkpoint was trained on backbone {file_backbone!r}; prompts only load onto the "
                   f"architecture they were trained on" if file_backbone and file_backbone != arch else
                   "the checkpoint's parameters do not fit the backbone its metadata names")
            raise CheckpointError(f"{path}: {key} has shape {tuple(value.shape)} in the checkpoint but "
                                  f"{tuple(expected[key].shape)} for backbone {arch!r} ({why})")
    check_tensor_values(state, expected, path)


def load_learned_into(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a checkpoint's learned parameters into a built ``PromptModel`` (or a learner)."""
    learner = getattr(model, "module", model)
    learner = getattr(learner, "learner", learner)
    state, meta = read_learned(path)
    file_backbone = (meta.get("backbone") or {}).get("name") if isinstance(meta, dict) else None
    recorded = meta.get("learner") if isinstance(meta, dict) else None
    learner.adopt_learned(state, recorded if isinstance(recorded, dict) else {}, path)
    check_state_fits(learner, state, path, file_backbone)
    check_same_weights(meta.get("backbone_weights") if isinstance(meta, dict) else None, learner.backbone, path,
                       "trained")
    learner.load_state_dict(state)


def load_learner(path: str | os.PathLike, device: str | torch.device = "cpu",
                 class_names: list[str] | None = None, backbone: dict[str, Any] | None = None) -> PromptLearner:
    """Rebuild a trained learner from its checkpoint alone (backbone, hyper-parameters, classes).

    ``backbone`` overrides the recorded backbone settings (e.g. ``{"pretrained": "/data/ViT-B-16.pt"}``
    to put the same architecture's real weights under prompts trained elsewhere).
    """
    state, meta = read_learned(path)
    name, hparams, backbone_args, names = learner_spec(meta, path)
    if backbone:
        unknown = sorted(set(backbone) - set(BACKBONE_KEYS))
        if unknown:
            raise TypeError(f"unknown backbone settings {unknown}; accepted: {', '.join(BACKBONE_KEYS)}")
        if backbone.get("name", backbone_args["name"]) != backbone_args["name"]:
            raise CheckpointError(
                f"{path}: trained on backbone {backbone_args['name']!r}, not {backbone['name']!r}; "
                f"prompts only load onto the architecture they were trained on"
            )
        backbone_args.update(backbone)
    info = meta.get("backbone_info")
    recorded = info.get("quick_gelu") if isinstance(info, dict) else None
    if backbone_args.get("quick_gelu") is None and isinstance(recorded, bool):
        backbone_args["quick_gelu"] = recorded  # the activation the prompts were trained with
    if not (class_names or names):
        raise CheckpointError(f"{path}: no class names in the metadata; pass class_names=")
    check_sizes(hparams, state, path)  # before the backbone or anything else is built
    clip = build_clip(**backbone_args, device=device)
    try:
        learner = build_learner(name, clip, class_names or names, **hparams)
    except (ValueError, TypeError) as err:  # a setting the learner refuses (a size beyond the backbone's...)
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path}: the metadata's learner {name!r} does not build on backbone "
                              f"{backbone_args['name']!r}: {detail}") from None
    check_state_fits(learner, state, path, backbone_args["name"])
    if not backbone:  # the recorded weights must still be what the recorded tag or file holds
        check_same_weights(meta.get("backbone_weights"), learner.backbone, path, "trained")
    learner.load_state_dict({k: v.to(device) for k, v in state.items()})
    return learner.eval()
