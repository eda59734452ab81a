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

import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

# Non-tensor entries that OpenAI's state dicts carry beside the weights.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


class CheckpointError(ValueError):
    """A weight file that cannot be used: unsafe, unreadable, or not matching the architecture."""


@dataclass
class LoadedWeights:
    """Tensors read from a file, with what the file says about how they were trained."""

    state_dict: dict[str, torch.Tensor]
    source_format: str  # "torchscript", "openai", "open_clip" or "safetensors"
    metadata: dict[str, str] = field(default_factory=dict)


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
        import io

        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._path = path

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
        kind, dtype, key, _location, numel = pid
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"{self._path}: unexpected storage record {pid!r}")
        raw = bytearray(self._archive.read(f"{self._prefix}data/{key}"))
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(raw) < numel * itemsize:
            raise CheckpointError(f"{self._path}: storage {key} is truncated")
        if not raw:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(raw, dtype=dtype, count=numel)


def _flatten_script_state(obj: object, prefix: str, out: dict[str, torch.Tensor]) -> None:
    if isinstance(obj, _ScriptObject):
        for key, value in getattr(obj, "attrs", {}).items():
            _flatten_script_state(value, f"{prefix}{key}.", out)
    elif isinstance(obj, torch.Tensor):
        out[prefix[:-1]] = obj


def read_torchscript_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor attribute of a TorchScript archive, keyed by its dotted module path."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: not a TorchScript archive (no top-level data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        root = _TorchScriptUnpickler(archive.read(pickles[0]), archive, prefix, path).load()
    state: dict[str, torch.Tensor] = {}
    _flatten_script_state(root, "", state)
    return state


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/code/") or "/code/" in n for n in names) and any(
        n.endswith("/constants.pkl") for n in names
    )


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


def read_weights(path: str | Path) -> LoadedWeights:
    """Read a CLIP weight file of any supported format; nothing in it is executed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"weight file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
        return LoadedWeights(state, "safetensors", metadata)
    if _is_torchscript(path):
        state = read_torchscript_tensors(path)
        # TorchScript also stores plain tensor attributes; the causal masks are the only ones in CLIPs
        state = {k: v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS and k.split(".")[-1] != "attn_mask"}
        return LoadedWeights(state, "torchscript", {"quick_gelu": "true"})
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refusing to load: the file holds Python objects beyond tensors, and loading it "
            f"would execute code from it ({str(err).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path}: cannot read as a torch checkpoint: {err}") from None
    state, fmt = _unwrap_state_dict(obj, path)
    meta = {"quick_gelu": "true"} if fmt == "openai" else {}
    return LoadedWeights(state, fmt, meta)


def check_state_dict(
    model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path, arch: str
) -> None:
    """Fail with the first mismatched key and both shapes, or the missing/unexpected keys."""
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


def save_safetensors(state: dict[str, torch.Tensor], path: str | Path, metadata: dict) -> None:
    """Write tensors and string metadata atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp), metadata=meta)
    os.chmod(tmp, 0o644)  # an ordinary, shareable file (the temporary one may be created private)
    tmp.replace(path)
