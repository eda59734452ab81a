"""The seeded random ViT-B/16 that every official golden file was computed with (tests/golden/*.json)."""

import pytest
import torch

from vlprompt.backbones import PreprocessCfg, PromptableCLIP, WeightsInfo, build_open_clip_model


def seeded_vitb16(seed: int, float_sum: float) -> PromptableCLIP:
    """``torch.manual_seed(seed); build_open_clip_model('ViT-B-16', quick_gelu=True)``, wrapped as vlprompt's
    backbone; fails when the weights' sum is not ``float_sum`` (the golden file's record of them)."""
    torch.manual_seed(seed)
    model = build_open_clip_model("ViT-B-16", quick_gelu=True)
    total = sum(v.double().sum().item() for v in model.state_dict().values() if v.is_floating_point())
    assert total == pytest.approx(float_sum, rel=1e-12, abs=1e-9), (
        f"the seeded random ViT-B/16 (seed {seed}) is not the one the golden numbers were computed with "
        "(did open_clip's initialisation change?)")
    return PromptableCLIP(model, WeightsInfo("ViT-B-16", None, True, PreprocessCfg(224)))
