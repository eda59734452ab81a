"""Hostile or malformed weight files are refused with a CheckpointError naming the file and the fault.

Every file here is written by the test itself (tmp_path): zip bombs, wrongly typed or non-finite
weights, impossible preprocessing metadata, broken TorchScript archives and safetensors headers.
Also: a file that does not say which activation it was trained with loads with a warning.
"""

from __future__ import annotations

import json
import logging
import pickle
import struct
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vlprompt.backbones import (
    CheckpointError,
    ClipArch,
    build_clip,
    build_open_clip_model,
    read_weights,
)
from vlprompt.backbones import archs as archs_module
from vlprompt.backbones import pretrained as pretrained_module
from vlprompt.registry import CLIPS


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    """The state dict of a random ``test-tiny`` CLIP (QuickGELU, as OpenAI's)."""
    torch.manual_seed(3)
    return {k: v.clone() for k, v in build_open_clip_model("test-tiny", quick_gelu=True).state_dict().items()}


def _bomb_member(archive: zipfile.ZipFile, name: str, inflated_bytes: int) -> None:
    """A member of zeros: a few hundred KB on disk, ``inflated_bytes`` once inflated."""
    chunk = bytes(2**22)
    with archive.open(name, "w", force_zip64=True) as member:
        for _ in range(inflated_bytes // len(chunk) + 1):
            member.write(chunk)


# Far beyond what weights of ``test-tiny`` (3.4M elements) can take, even as float64 with optimizer state.
BOMB_BYTES = 320 * 2**20


def _forbid_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to unpickle or inflate the file fail the test: the refusal must come first."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("the file was read although its size alone should have refused it")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(zipfile.ZipFile, "read", refuse)


# ----------------------------------------------------------------------------------------- 1. zip bombs
def test_torch_save_zip_bomb_is_refused_before_it_is_read(tiny_state, tmp_path, monkeypatch):
    path = tmp_path / "bomb.pt"
    torch.save({"ln_final.weight": tiny_state["ln_final.weight"]}, path)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        _bomb_member(archive, "bomb/data/99", BOMB_BYTES)
    assert path.stat().st_size < 4 * 2**20  # a few MB on disk
    _forbid_reading(monkeypatch)
    with pytest.raises(CheckpointError, match=r"bomb\.pt: refusing to load: the archive's members inflate"):
        build_clip("test-tiny", pretrained=path, quick_gelu=True)
    with pytest.raises(CheckpointError, match=r"largest member: 'bomb/data/99'"):
        read_weights(path, max_bytes=10 * 2**20)


def test_torchscript_zip_bomb_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "bomb_ts.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("m/data.pkl", pickle.dumps({}, protocol=2))
        archive.writestr("m/constants.pkl", pickle.dumps((), protocol=2))
        archive.writestr("m/code/__torch__.py", "")
        _bomb_member(archive, "m/data/0", BOMB_BYTES)
    _forbid_reading(monkeypatch)
    with pytest.raises(CheckpointError, match=r"bomb_ts\.pt: refusing to load: the archive's members inflate"):
        build_clip("test-tiny", pretrained=path)


def test_file_larger_than_any_weights_of_the_arch_is_refused(tmp_path):
    path = tmp_path / "big.safetensors"
    save_file({"w": torch.zeros(2**18)}, str(path))  # 1 MiB of tensor data
    with pytest.raises(CheckpointError, match=r"big\.safetensors: refusing to load: the file is \d+ bytes"):
        read_weights(path, max_bytes=2**19)


def test_legitimate_files_fit_the_bound(tiny_state, tmp_path):
    path = tmp_path / "f64.pt"
    torch.save({k: v.double() for k, v in tiny_state.items()}, path)  # float64: the largest plain format
    clip = build_clip("test-tiny", pretrained=path, quick_gelu=True)
    assert torch.equal(clip.model.ln_final.weight, tiny_state["ln_final.weight"])


# ------------------------------------------------------------------------ 2. dtypes and finite values
@pytest.mark.parametrize(
    "value, message",
    [
        (torch.ones(64, dtype=torch.int64), r"ln_final\.weight holds torch\.int64 values"),
        (torch.ones(64, dtype=torch.bool), r"ln_final\.weight holds torch\.bool values"),
        (torch.full((64,), float("nan")), r"ln_final\.weight holds non-finite values \(nan\)"),
        (torch.full((64,), float("inf"), dtype=torch.float16), r"ln_final\.weight holds non-finite values \(inf"),
        (torch.full((64,), 1e300, dtype=torch.float64), r"ln_final\.weight holds non-finite values \(inf"),
    ],
    ids=["int64", "bool", "nan", "inf-fp16", "float64-overflow"],
)
def test_wrong_dtype_or_non_finite_weights_are_refused(tiny_state, tmp_path, value, message):
    state = dict(tiny_state)
    state["ln_final.weight"] = value
    path = tmp_path / "bad_values.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=rf"bad_values\.pt: {message}"):
        build_clip("test-tiny", pretrained=path, quick_gelu=True)


def test_integer_buffers_of_the_model_still_load(tmp_path, monkeypatch):
    """A ResNet tower's BatchNorm counters (int64) are legitimately integer."""
    arch = ClipArch(
        "trust-tiny-rn", "RN50",
        overrides=dict(
            embed_dim=16,
            vision_cfg=dict(image_size=32, layers=[1, 1, 1, 1], width=8),
            text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
        ),
    )
    monkeypatch.setitem(CLIPS.module_dict, arch.name, arch)  # registered for this test only
    state = build_open_clip_model(arch.name).state_dict()
    assert any(not v.is_floating_point() for v in state.values())
    path = tmp_path / "rn.pt"
    torch.save(state, path)
    clip = build_clip(arch.name, pretrained=path, quick_gelu=False)
    assert clip.model.visual.bn1.num_batches_tracked.dtype == torch.int64


# ------------------------------------------------------------------------------------ 3. metadata
def _safetensors_with_meta(tmp_path: Path, meta: dict[str, str]) -> Path:
    path = tmp_path / "meta.safetensors"
    save_file({"ln_final.weight": torch.ones(64)}, str(path), metadata=meta)
    return path


def _pre(**values) -> dict[str, str]:
    return {"quick_gelu": "true", "preprocess": json.dumps(values)}


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"quick_gelu": "1", "preprocess": "{not json"}, r"'preprocess' is not valid JSON"),
        ({"quick_gelu": "1", "preprocess": "[224]"}, r"'preprocess' is a JSON list, not an object"),
        (_pre(image_size=0), r"'preprocess' key 'image_size' is 0"),
        (_pre(image_size=-32), r"'preprocess' key 'image_size' is -32"),
        (_pre(image_size="big"), r"'preprocess' key 'image_size' is 'big'"),
        (_pre(image_size=True), r"'preprocess' key 'image_size' is True"),
        (_pre(mean=[0.5, 0.5]), r"'preprocess' key 'mean' is \[0\.5, 0\.5\]"),
        (_pre(mean=["a", "b", "c"]), r"'preprocess' key 'mean'"),
        (_pre(std=0.5), r"'preprocess' key 'std' is 0\.5"),
        (_pre(std=[0.2, 0.0, 0.2]), r"'preprocess' key 'std' .*must be positive"),
        (_pre(std=[0.2, -1, 0.2]), r"'preprocess' key 'std' .*must be positive"),
        (_pre(interpolation="nearest"), r"'preprocess' key 'interpolation' is 'nearest'"),
        (_pre(resize_mode="crop"), r"'preprocess' key 'resize_mode' is 'crop'"),
        ({"quick_gelu": "maybe"}, r"'quick_gelu' is 'maybe', not a boolean"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_metadata_is_refused_naming_the_key(tmp_path, meta, message):
    path = _safetensors_with_meta(tmp_path, meta)
    with pytest.raises(CheckpointError, match=rf"meta\.safetensors: metadata {message}"):
        build_clip("test-tiny", pretrained=path)


def test_good_metadata_still_reads(tmp_path):
    meta = _pre(image_size=32.0, mean=[0.5, 0.5, 0.5], std=[1, 1, 1], interpolation="bilinear", resize_mode="squash")
    loaded, info = pretrained_module.resolve_pretrained(archs_module.get_arch("test-tiny"),
                                                        _safetensors_with_meta(tmp_path, meta))
    assert info.quick_gelu and info.preprocess.image_size == 32 and info.preprocess.std == (1.0, 1.0, 1.0)
    assert (info.preprocess.interpolation, info.preprocess.resize_mode) == ("bilinear", "squash")


def test_arch_metadata_that_is_not_a_string_is_refused(tmp_path, monkeypatch):
    path = _safetensors_with_meta(tmp_path, {})
    real = pretrained_module.read_weights

    def with_int_arch(*args, **kwargs):
        loaded = real(*args, **kwargs)
        loaded.metadata["arch"] = 5
        return loaded

    monkeypatch.setattr(pretrained_module, "read_weights", with_int_arch)
    with pytest.raises(CheckpointError, match=r"meta\.safetensors: metadata 'arch' is a int, not a string"):
        build_clip("test-tiny", pretrained=path)


def test_safetensors_metadata_with_a_non_string_value_is_refused(tmp_path):
    path = tmp_path / "int_arch.safetensors"
    header = json.dumps({"__metadata__": {"arch": 5}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + bytes(4))
    with pytest.raises(CheckpointError, match=r"int_arch\.safetensors: "):
        build_clip("test-tiny", pretrained=path)


# ------------------------------------------------------------------------- 4. malformed TorchScript
class _StorageRef:
    """Pickled as a persistent id, the way TorchScript refers to a tensor's storage member."""

    def __init__(self, pid: object) -> None:
        self.pid = pid


def _script_pickle(root: object) -> bytes:
    import io

    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)
    pickler.persistent_id = lambda obj: obj.pid if isinstance(obj, _StorageRef) else None
    pickler.dump(root)
    return buffer.getvalue()


def _script_archive(path: Path, data_pkl: bytes, members: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("m/data.pkl", data_pkl)
        archive.writestr("m/constants.pkl", pickle.dumps((), protocol=2))
        archive.writestr("m/code/__torch__.py", "")
        for name, data in (members or {}).items():
            archive.writestr(name, data)
    return path


def _corrupt_member(path: Path, name: str) -> None:
    """Flip the stored bytes of a member so that its CRC no longer matches."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("case", ["bad-crc", "missing-storage", "pid-wrong-shape", "pid-bad-numel", "truncated-pickle"])
def test_malformed_torchscript_archive_gives_a_checkpoint_error(tmp_path, case):
    path = tmp_path / "broken_ts.pt"
    storage = ("storage", torch.FloatStorage, "0", "cpu", 4)
    if case == "bad-crc":
        _script_archive(path, _script_pickle({"w": 1}), {"m/data/0": bytes(16)})
        _corrupt_member(path, "m/data.pkl")
    elif case == "missing-storage":
        _script_archive(path, _script_pickle((_StorageRef(storage),)))
    elif case == "pid-wrong-shape":
        _script_archive(path, _script_pickle((_StorageRef(("storage", "0")),)), {"m/data/0": bytes(16)})
    elif case == "pid-bad-numel":
        _script_archive(path, _script_pickle((_StorageRef(storage[:4] + ("4",)),)), {"m/data/0": bytes(16)})
    else:
        _script_archive(path, _script_pickle({"w": _StorageRef(storage)})[:-6], {"m/data/0": bytes(16)})
    with pytest.raises(CheckpointError, match=r"broken_ts\.pt: ") as err:
        read_weights(path)
    assert type(err.value) is CheckpointError


def test_a_storage_named_many_times_is_read_once(tmp_path, monkeypatch):
    """A pickle that names one big storage again and again must not multiply memory."""
    storage = ("storage", torch.FloatStorage, "0", "cpu", 4)
    path = _script_archive(tmp_path / "shared.pt", _script_pickle([_StorageRef(storage)] * 50),
                           {"m/data/0": bytes(16)})
    reads = []
    real_read = zipfile.ZipFile.read
    monkeypatch.setattr(zipfile.ZipFile, "read", lambda self, name, *a: reads.append(name) or real_read(self, name, *a))
    read_weights(path)
    assert reads.count("m/data/0") == 1


# ------------------------------------------------------------------------------ 5. safetensors errors
def _valid_safetensors_bytes(tmp_path: Path) -> bytes:
    src = tmp_path / "src.safetensors"
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(src))
    return src.read_bytes()


@pytest.mark.parametrize("case", ["zero-byte", "truncated", "header-too-large", "bad-json", "offsets-out-of-file"])
def test_bad_safetensors_header_gives_a_checkpoint_error(tmp_path, case):
    good = _valid_safetensors_bytes(tmp_path)
    if case == "zero-byte":
        data = b""
    elif case == "truncated":
        data = good[: len(good) - 40]
    elif case == "header-too-large":
        data = struct.pack("<Q", 2**40) + b"{}"
    elif case == "bad-json":
        data = struct.pack("<Q", 9) + b"{not json"
    else:
        header = json.dumps({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}).encode()
        data = struct.pack("<Q", len(header)) + header + bytes(8)
    path = tmp_path / "broken.safetensors"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=r"broken\.safetensors: ") as err:
        read_weights(path)
    assert type(err.value) is CheckpointError
    from vlprompt.backbones import read_safetensors

    with pytest.raises(CheckpointError, match=r"broken\.safetensors: ") as err:
        read_safetensors(path)
    assert type(err.value) is CheckpointError


def test_read_safetensors_returns_tensors_and_metadata(tmp_path):
    from vlprompt.backbones import read_safetensors

    path = tmp_path / "ok.safetensors"
    save_file({"w": torch.arange(3.0)}, str(path), metadata={"k": "v"})
    state, meta = read_safetensors(path)
    assert torch.equal(state["w"], torch.arange(3.0)) and meta == {"k": "v"}


# ----------------------------------------------------------------------------------- 6. activation
def _activation_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if "activation" in str(w.message)]


@pytest.mark.parametrize("fmt", ["open_clip", "safetensors"])
def test_unknown_activation_warns_and_says_how_to_choose(tiny_state, tmp_path, fmt, caplog):
    from vlprompt.backbones import ActivationUnknownWarning

    if fmt == "open_clip":
        path = tmp_path / "plain.pt"
        torch.save({"state_dict": tiny_state}, path)
    else:
        path = tmp_path / "plain.safetensors"
        save_file(tiny_state, str(path), metadata={"arch": "test-tiny"})
    with caplog.at_level(logging.WARNING, logger="vlprompt"), pytest.warns(ActivationUnknownWarning) as record:
        clip = build_clip("test-tiny", pretrained=path)
    assert not clip.info.quick_gelu
    (msg,) = _activation_warnings(record.list)
    assert str(path) in msg and "assuming GELU" in msg and "quick_gelu=True" in msg
    assert any(str(path) in r.getMessage() and "assuming GELU" in r.getMessage() for r in caplog.records)


def _no_activation_warning(**kwargs):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        clip = build_clip(**kwargs)
    assert _activation_warnings(record) == []
    return clip


def test_no_activation_warning_when_the_file_or_the_caller_says_it(tiny_state, tmp_path, monkeypatch):
    plain = tmp_path / "plain.pt"
    torch.save(tiny_state, plain)
    assert not _no_activation_warning(name="test-tiny", pretrained=plain, quick_gelu=False).info.quick_gelu
    assert _no_activation_warning(name="test-tiny", pretrained=plain, quick_gelu=True).info.quick_gelu

    openai = tmp_path / "openai.pt"
    torch.save({**tiny_state, "input_resolution": torch.tensor(32), "context_length": torch.tensor(77),
                "vocab_size": torch.tensor(49408)}, openai)
    assert _no_activation_warning(name="test-tiny", pretrained=openai).info.quick_gelu

    tagged = tmp_path / "tagged.safetensors"
    save_file(tiny_state, str(tagged), metadata={"quick_gelu": "False"})
    assert not _no_activation_warning(name="test-tiny", pretrained=tagged).info.quick_gelu

    # an open_clip pretrained tag: its table says the activation (LAION tags: GELU, without a key)
    monkeypatch.setattr(pretrained_module, "_download_tag", lambda arch, tag, cache: (plain, {"mean": (0.5,) * 3}))
    assert not _no_activation_warning(name="test-tiny", pretrained="laion-like-tag").info.quick_gelu


def test_no_activation_warning_for_torchscript(tmp_path):
    torch.manual_seed(4)
    path = tmp_path / "script.pt"
    torch.jit.script(build_open_clip_model("test-tiny", quick_gelu=True).eval()).save(str(path))
    assert _no_activation_warning(name="test-tiny", pretrained=path).info.quick_gelu


def test_no_activation_warning_for_the_packaged_toy_weights():
    assert not _no_activation_warning(name="toy", pretrained="toy").info.quick_gelu
