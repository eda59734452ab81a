"""Weight files: every supported format loads to identical outputs; unsafe or wrong files are refused."""

import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vlprompt.backbones import (
    CheckpointError,
    PretrainedUnavailable,
    build_clip,
    build_open_clip_model,
    read_weights,
)


@pytest.fixture(scope="module")
def source():
    """A small random CLIP with QuickGELU (as OpenAI's), plus fixed inputs and its outputs."""
    torch.manual_seed(10)
    model = build_open_clip_model("test-tiny", quick_gelu=True).eval()
    images = torch.randn(2, 3, 32, 32)
    from vlprompt.backbones import PromptTokenizer

    ids = PromptTokenizer()(["a photo of a dog.", "a photo of a cat."])
    with torch.no_grad():
        out = (model.encode_image(images), model.encode_text(ids))
    return model, images, ids, out


def _assert_same_outputs(clip, source):
    _, images, ids, (ref_image, ref_text) = source
    with torch.no_grad():
        assert torch.allclose(clip.encode_image(images), ref_image, atol=1e-6)
        assert torch.allclose(clip.encode_text(ids), ref_text, atol=1e-6)


def test_openai_torchscript_archive_is_read_for_tensors_only(source, tmp_path):
    model = source[0]
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.script(model).save(str(path))
    loaded = read_weights(path)
    assert loaded.source_format == "torchscript"
    clip = build_clip("test-tiny", pretrained=path)
    assert clip.info.quick_gelu  # OpenAI weights mean QuickGELU, without the user saying so
    _assert_same_outputs(clip, source)


def test_openai_plain_state_dict_in_fp16(source, tmp_path):
    model = source[0]
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    state.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    path = tmp_path / "openai_state.pt"
    torch.save(state, path)
    clip = build_clip("test-tiny", pretrained=str(path))
    assert clip.info.quick_gelu
    _, images, ids, (ref_image, ref_text) = source
    with torch.no_grad():  # fp16 storage rounds the weights: compare loosely, but far below noise
        assert (clip.encode_text(ids) - ref_text).abs().max() < 5e-2
        assert clip.model.visual.conv1.weight.dtype == torch.float32


def test_open_clip_training_checkpoint(source, tmp_path):
    model = source[0]
    path = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               path)
    clip = build_clip("test-tiny", pretrained=path, quick_gelu=True)
    _assert_same_outputs(clip, source)
    # without being told, an open_clip checkpoint means plain GELU (with a warning): outputs then differ
    with pytest.warns(UserWarning, match="assuming GELU"):
        gelu = build_clip("test-tiny", pretrained=path)
    assert not gelu.info.quick_gelu
    with torch.no_grad():
        assert not torch.allclose(gelu.encode_image(source[1]), source[3][0], atol=1e-4)


def test_safetensors_with_metadata(source, tmp_path):
    model = source[0]
    path = tmp_path / "tiny.safetensors"
    meta = {"arch": "test-tiny", "quick_gelu": "true",
            "preprocess": json.dumps({"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3})}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    clip = build_clip("test-tiny", pretrained=path)
    assert clip.info.quick_gelu and clip.info.preprocess.mean == (0.5, 0.5, 0.5)
    _assert_same_outputs(clip, source)
    with pytest.raises(CheckpointError, match="saved for architecture 'test-tiny'"):
        build_clip("toy", pretrained=path)


def test_shape_mismatch_names_the_key_and_both_shapes(source, tmp_path):
    state = dict(source[0].state_dict())
    state["ln_final.weight"] = torch.ones(65)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"ln_final\.weight has shape \(65,\) in the file but \(64,\)"):
        build_clip("test-tiny", pretrained=path)
    del state["ln_final.weight"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="missing 1 keys"):
        build_clip("test-tiny", pretrained=path)


class _Payload:
    """Unpickling this would create a file: the marker of code run from a checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoint_that_would_execute_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        build_clip("test-tiny", pretrained=path)
    assert not marker.exists()


def test_torchscript_archive_with_foreign_globals_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_ts.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps(_Payload(str(marker)), protocol=2))
        z.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
        z.writestr("evil/code/__torch__.py", "")
    with pytest.raises(CheckpointError, match="refusing to load: the TorchScript archive references"):
        read_weights(path)
    assert not marker.exists()


def test_offline_tag_names_the_cache_and_the_file_option(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(PretrainedUnavailable) as err:
        build_clip("ViT-B-16", pretrained="openai", cache_dir=str(tmp_path / "clip"))
    msg = str(err.value)
    assert str(tmp_path / "clip") in msg and "pretrained='/path/to/file.pt'" in msg
    with pytest.raises(PretrainedUnavailable, match="known tags: .*laion2b_s34b_b88k"):
        build_clip("ViT-B-16", pretrained="no-such-tag")
    with pytest.raises(CheckpointError, match="not found"):
        build_clip("test-tiny", pretrained=os.path.join(str(tmp_path), "missing.pt"))
