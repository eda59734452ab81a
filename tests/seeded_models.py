"""The seeded random ViT-B/16 that every official golden file was computed with (tests/golden/*.json), and the
comparison with the goldens' tensor summaries."""

import pytest
import torch

from vlprompt.backbones import PreprocessCfg, PromptableCLIP, WeightsInfo, build_open_clip_model


def seeded_vitb16(seed: int, float_sum: float) -> PromptableCLIP:
    """``torch.manual_seed(seed); build_open_clip_model('ViT-B-16', quick_gelu=True)``, wrapped as vlprompt's
    backbone; fails when the weights' sum is not ``float_sum`` (the golden file's record of them)."""
    return seeded_clip("ViT-B-16", seed, float_sum)


def seeded_clip(arch: str, seed: int, float_sum: float) -> PromptableCLIP:
    """:func:`seeded_vitb16` for any open_clip architecture at 224 pixels (PromptKD's ViT-L/14 teacher)."""
    torch.manual_seed(seed)
    model = build_open_clip_model(arch, quick_gelu=True)
    total = sum(v.double().sum().item() for v in model.state_dict().values() if v.is_floating_point())
    assert total == pytest.approx(float_sum, rel=1e-12, abs=1e-9), (
        f"the seeded random {arch} (seed {seed}) is not the one the golden numbers were computed with "
        "(did open_clip's initialisation change?)")
    return PromptableCLIP(model, WeightsInfo(arch, None, True, PreprocessCfg(224)))


def seeded_images(expected_sum: float) -> torch.Tensor:
    """``torch.manual_seed(1); torch.randn(4, 3, 224, 224)``, the goldens' images; fails when their sum is not the
    golden file's record of them."""
    torch.manual_seed(1)
    images = torch.randn(4, 3, 224, 224)
    assert images.double().sum().item() == pytest.approx(expected_sum, rel=1e-12), "not the goldens' images"
    return images


def assert_summary(t: torch.Tensor, ref: dict, what: str, atol: float = 1e-6, rtol: float = 1e-4) -> None:
    """Compare with an official summary of a tensor: its first 8 values within ``atol + rtol |value|``, its sum and
    sum of absolute values within 1e-5 of the latter (the shape too, where the summary records it)."""
    t = t.detach().double()
    if "shape" in ref:
        assert list(t.shape) == ref["shape"], what
    first8 = torch.tensor(ref["first8"], dtype=torch.float64)
    diff = (t.flatten()[:8] - first8).abs()
    assert (diff <= atol + rtol * first8.abs()).all(), f"{what}: first values differ by up to {diff.max():.3g}"
    scale = ref["abs_sum"]
    assert abs(t.abs().sum().item() - ref["abs_sum"]) <= 1e-5 * scale + 1e-7, f"{what}: abs_sum"
    assert abs(t.sum().item() - ref["sum"]) <= 1e-5 * scale + 1e-7, f"{what}: sum"


def max_diff(a: torch.Tensor, ref) -> float:
    """Largest absolute difference between ``a`` and a golden list of numbers."""
    return (a.detach().double() - torch.as_tensor(ref, dtype=torch.float64)).abs().max().item()
