"""Read CLIP weight files without executing anything stored in them.

Three formats are read:

* safetensors files (plain tensors plus string metadata);
* ``torch.save`` pickles (an OpenAI or open_clip state dict, or an open_clip training
  checkpoint ``{"state_dict": ...}``), always with ``torch.load(weights_only=True)``;
* OpenAI's TorchScript archives (``ViT-B-16.pt``). ``torch.jit.load`` would run the TorchScript
  program, so the archive is opened as a zip and only its pickled attribute tree is read, with an
  unpickler that builds tensors and refuses every other global.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import UserError
from ..io import atomic_write

if TYPE_CHECKING:
    from .promptable import PromptableCLIP

# Non-tensor entries that OpenAI's state dicts carry beside the weights.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")

# What a weight file may hold per model tensor element: float64 weights, or fp32 weights plus the two
# fp32 Adam moments (and a little more) of an open_clip training checkpoint.
BYTES_PER_ELEMENT = 16
# Room for everything that is not a tensor: pickles, TorchScript code and debug members, metadata.
SIZE_SLACK_BYTES = 128 * 2**20


def max_weight_bytes(num_elements: int) -> int:
    """The most bytes a weight file for a model of ``num_elements`` tensor elements can sensibly take.

    Used to refuse zip bombs (members that inflate far beyond what any real checkpoint holds)
    before anything is inflated.
    """
    return int(num_elements) * BYTES_PER_ELEMENT + SIZE_SLACK_BYTES


class CheckpointError(UserError, ValueError):
    """A weight file that cannot be used: unsafe, unreadable, or not matching the architecture."""


@dataclass
class LoadedWeights:
    """Tensors read from a file, with what the file says about how they were trained."""

    state_dict: dict[str, torch.Tensor]
    source_format: str  # "torchscript", "openai", "open_clip" or "safetensors"
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path | None = None  # the file they were read from


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


# TorchScript pickles typed lists and type tags through these helpers; plain data in, plain data out.
_LIST_BUILDERS = {
    "build_intlist": list,
    "build_doublelist": list,
    "build_boollist": list,
    "build_tensorlist": list,
    "build_genericlist": list,
    "restore_type_tag": lambda value, _type_str: value,
}


class _ScriptObject:
    """Stands in for a TorchScript class: keeps the attribute dict it is given, runs nothing."""

    def __init__(self, *args: object) -> None:
        self.attrs: dict = {}

    def __setstate__(self, state: object) -> None:
        self.attrs = state if isinstance(state, dict) else {}


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, *_unused) -> torch.Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), offset)


class _TorchScriptUnpickler(pickle.Unpickler):
    """Unpickles the ``data.pkl`` of a TorchScript archive into plain objects and tensors."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: Path) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._path = path
        # one tensor per storage member, however often the pickle names it (no re-reading, no copies)
        self._storages: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def find_class(self, module: str, name: str):  # noqa: D102
        if module.startswith("__torch__"):
            return _ScriptObject
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, requires_grad, backward_hooks: data
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        if module == "torch.jit._pickle" and name in _LIST_BUILDERS:
            return _LIST_BUILDERS[name]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise CheckpointError(
            f"{self._path}: refusing to load: the TorchScript archive references {module}.{name}, "
            "which is neither a tensor nor module state"
        )

    def persistent_load(self, pid):  # noqa: D102
        if not (isinstance(pid, tuple) and len(pid) == 5):
            raise CheckpointError(f"{self._path}: unexpected storage record {pid!r:.200}")
        kind, dtype, key, _location, numel = pid
        if (
            kind != "storage"
            or not isinstance(dtype, torch.dtype)
            or not isinstance(key, str)
            or not isinstance(numel, int)
            or isinstance(numel, bool)
            or numel < 0
        ):
            raise CheckpointError(f"{self._path}: unexpected storage record {pid!r:.200}")
        member = f"{self._prefix}data/{key}"
        storage = self._storages.get((member, dtype))
        if storage is None:
            try:
                raw = bytearray(self._archive.read(member))
            except KeyError:
                raise CheckpointError(f"{self._path}: storage member {member!r} is missing from the archive") from None
            itemsize = torch.empty((), dtype=dtype).element_size()
            count = len(raw) // itemsize
            storage = torch.empty(0, dtype=dtype) if count == 0 else torch.frombuffer(raw, dtype=dtype, count=count)
            self._storages[(member, dtype)] = storage
        if storage.numel() < numel:
            raise CheckpointError(f"{self._path}: storage {key} is truncated")
        return storage[:numel]


def _flatten_script_state(obj: object, prefix: str, out: dict[str, torch.Tensor]) -> None:
    if isinstance(obj, _ScriptObject):
        for key, value in getattr(obj, "attrs", {}).items():
            _flatten_script_state(value, f"{prefix}{key}.", out)
    elif isinstance(obj, torch.Tensor):
        out[prefix[:-1]] = obj


# What a malformed archive or pickle raises from inside zipfile, pickle and torch (never a CheckpointError).
_MALFORMED_ERRORS = (
    zipfile.BadZipFile,
    pickle.UnpicklingError,
    EOFError,
    OSError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    RuntimeError,
    OverflowError,
    MemoryError,
    RecursionError,
)


def read_torchscript_tensors(path: str | Path, *, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """Every tensor attribute of a TorchScript archive, keyed by its dotted module path.

    ``max_bytes`` bounds the archive's total uncompressed size (see :func:`read_weights`).
    """
    path = Path(path)
    _zip_members(path, max_bytes)
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise CheckpointError(f"{path}: not a TorchScript archive (no top-level data.pkl)")
            prefix = pickles[0][: -len("data.pkl")]
            root = _TorchScriptUnpickler(archive.read(pickles[0]), archive, prefix, path).load()
        state: dict[str, torch.Tensor] = {}
        _flatten_script_state(root, "", state)
    except CheckpointError:
        raise
    except _MALFORMED_ERRORS as err:
        raise CheckpointError(
            f"{path}: malformed TorchScript archive ({type(err).__name__}: {str(err)[:200] or 'no detail'})"
        ) from None
    return state


def _zip_members(path: Path, max_bytes: int | None) -> list[str] | None:
    """The member names of a zip file (None if it is no zip), refusing one that inflates beyond ``max_bytes``.

    Only the central directory is read: nothing is inflated.
    """
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise CheckpointError(f"{path}: malformed zip archive ({type(err).__name__}: {err})") from None
    total = sum(info.file_size for info in infos)
    if max_bytes is not None and total > max_bytes:
        biggest = max(infos, key=lambda info: info.file_size)
        raise CheckpointError(
            f"{path}: refusing to load: the archive's members inflate to {total} bytes, more than the "
            f"{max_bytes} that weights for this architecture can take (largest member: {biggest.filename!r}, "
            f"{biggest.file_size} bytes)"
        )
    return [info.filename for info in infos]


def _is_torchscript(names: list[str] | None) -> bool:
    if names is None:
        return False
    return any(n.endswith("/code/") or "/code/" in n for n in names) and any(
        n.endswith("/constants.pkl") for n in names
    )


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and string metadata of a safetensors file; every read error is a CheckpointError.

    safetensors itself validates the header (size, JSON, offsets) without executing anything; this
    wraps its errors so that they name the file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"safetensors file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
    except (SafetensorError, OSError, ValueError, TypeError, RuntimeError) as err:
        detail = str(err).splitlines()[0] if str(err) else "no detail"
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(err).__name__}: {detail})") from None
    bad = [k for k, v in metadata.items() if not isinstance(v, str)]
    if bad:
        raise CheckpointError(f"{path}: safetensors metadata entry {bad[0]!r} is not a string")
    return state, metadata


def _unwrap_state_dict(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    fmt = "open_clip"
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: expected a state dict of tensors, found {type(obj).__name__}")
    if any(k in obj for k in OPENAI_EXTRA_KEYS):
        fmt = "openai"
    state = {}
    for key, value in obj.items():
        if key in OPENAI_EXTRA_KEYS:
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        state[key[len("module.") :] if key.startswith("module.") else key] = value
    return state, fmt


def read_weights(path: str | Path, *, max_bytes: int | None = None) -> LoadedWeights:
    """Read a CLIP weight file of any supported format; nothing in it is executed.

    ``max_bytes`` (see :func:`max_weight_bytes`) bounds the file's size and, for zip files (torch.save's
    format and TorchScript archives), the total size its members inflate to: a larger file cannot hold
    weights of the architecture, and is refused before it is read into memory.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"weight file not found: {path}")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise CheckpointError(
            f"{path}: refusing to load: the file is {size} bytes, more than the {max_bytes} that weights "
            "for this architecture can take"
        )
    if path.suffix == ".safetensors":
        state, metadata = read_safetensors(path)
        return LoadedWeights(state, "safetensors", metadata, path)
    members = _zip_members(path, max_bytes)
    if _is_torchscript(members):
        state = read_torchscript_tensors(path, max_bytes=max_bytes)
        # TorchScript also stores plain tensor attributes; the causal masks are the only ones in CLIPs
        state = {k: v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS and k.split(".")[-1] != "attn_mask"}
        return LoadedWeights(state, "torchscript", {"quick_gelu": "true"}, path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refusing to load: the file holds Python objects beyond tensors, and loading it "
            f"would execute code from it ({str(err).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError, IndexError, MemoryError) as err:
        raise CheckpointError(f"{path}: cannot read as a torch checkpoint: {err}") from None
    state, fmt = _unwrap_state_dict(obj, path)
    meta = {"quick_gelu": "true"} if fmt == "openai" else {}
    return LoadedWeights(state, fmt, meta, path)


def check_state_dict(
    model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path, arch: str
) -> None:
    """Fail with the first mismatched key and both shapes, the missing/unexpected keys, or a bad value.

    A floating parameter or buffer of the model must get floating weights, all finite: ``load_state_dict``
    would silently cast integers or booleans, and nan/inf would silently poison every output. (Integer
    buffers such as BatchNorm's ``num_batches_tracked`` are left as they are.) Float64 weights are
    checked as float32, the precision they are loaded in, so that values beyond its range are refused.
    """
    expected = model.state_dict()
    for key, value in expected.items():
        if key in state and tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{path}: weights do not fit architecture {arch!r}: {key} has shape "
                f"{tuple(state[key].shape)} in the file but {tuple(value.shape)} in the model"
            )
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]})")
        raise CheckpointError(f"{path}: weights do not fit architecture {arch!r}: {'; '.join(parts)}")
    check_tensor_values(state, expected, path)


def check_tensor_values(given: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                        path: str | os.PathLike, prefix: str = "") -> None:
    """Every tensor of ``given`` that stands for a floating tensor of ``expected`` is floating and finite.

    ``load_state_dict`` and ``copy_`` would silently cast integers or booleans, and nan/inf would silently
    poison every output; integer tensors the model itself keeps integer are left alone. Float64 values are
    checked as float32, the precision they are loaded in, so that values beyond its range are refused.
    ``prefix`` is put before each key in the message (the key as it is written in the file).
    """
    for key, like in expected.items():
        given_value = given.get(key)
        if given_value is None or not like.is_floating_point():
            continue
        if not given_value.is_floating_point():
            raise CheckpointError(
                f"{path}: {prefix}{key} holds {given_value.dtype} values in the file, but it stands for a floating "
                f"point tensor ({like.dtype}); refusing to cast them"
            )
        checked = given_value.float() if given_value.dtype == torch.float64 else given_value
        if checked.numel() and not bool(torch.isfinite(checked).all()):
            kind = "nan" if bool(torch.isnan(given_value).any()) else "inf (or beyond float32 range)"
            raise CheckpointError(f"{path}: {prefix}{key} holds non-finite values ({kind})")


def check_tensors_fit(given: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                      path: str | os.PathLike, owner: str, prefix: str = "") -> None:
    """The one check of tensors read from a file against what they will be loaded into (``owner``, named
    in the message): the same keys, the same shapes, floating and finite where the owner's are floating.
    A :class:`CheckpointError` names the file and the first key at fault."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        parts = ([f"lacks {prefix}{missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")]
                 if missing else [])
        if unexpected:
            parts.append(f"has {prefix}{unexpected[0]}" + (f" (and {len(unexpected) - 1} more)"
                                                           if len(unexpected) > 1 else "") + f" that {owner} has not")
        raise CheckpointError(f"{path}: its tensors do not fit {owner}: it {' and '.join(parts)}")
    for key, like in expected.items():
        if tuple(given[key].shape) != tuple(like.shape):
            raise CheckpointError(f"{path}: {prefix}{key} has shape {tuple(given[key].shape)} in the file but "
                                  f"{tuple(like.shape)} in {owner}")
    check_tensor_values(given, expected, path, prefix)


def save_safetensors(state: dict[str, torch.Tensor], path: str | Path, metadata: dict) -> None:
    """Write tensors and string metadata atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=meta)
        os.chmod(tmp, 0o644)  # an ordinary, shareable file (the temporary one may be created private)

    atomic_write(path, write)


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """The first 16 hex digits of the sha256 of a state dict's names, shapes and values (float tensors
    hashed as float32, so the digest does not depend on the precision a file stored them in): one
    digest per set of weights, whatever file or tag they came from."""
    sha = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach()
        tensor = tensor.float() if tensor.is_floating_point() else tensor
        tensor = tensor.cpu().contiguous()
        sha.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        sha.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return sha.hexdigest()[:16]


def check_same_weights(recorded: object, backbone: PromptableCLIP, path: str | os.PathLike, made: str = "made") -> None:
    """Stop when a file was ``made`` on other backbone weights than ``backbone``'s (its recorded
    ``backbone_weights`` digest, see :attr:`PromptableCLIP.weights_digest`), naming both. Files that
    record none (written before vlprompt recorded it) are not compared."""
    if recorded is None:
        return
    current = backbone.weights_digest
    if not isinstance(recorded, str):
        raise CheckpointError(f"{path}: metadata key 'backbone_weights' = {recorded!r} is not a weights digest")
    if recorded != current:
        def describe(digest: str) -> str:
            return "random (untrained) weights" if digest == "random" else f"weights {digest}"

        raise CheckpointError(
            f"{path} was {made} on backbone {describe(recorded)}, but this run's backbone {backbone.arch!r} "
            f"(pretrained={backbone.info.pretrained!r}) has {describe(current)}; use the file with the weights it "
            "was made on")
