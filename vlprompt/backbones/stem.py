"""A convolutional patch embedding for small ViTs.

A ViT trained from scratch on little data learns local structure (edges, corners, hence shapes)
slowly through its single strided patch projection; a few stride-2 3x3 convolutions in its place
fix that at a small cost ("Early convolutions help transformers see better", Xiao et al., 2021).
The transformer, its tokens and every prompt path are unchanged: the stem only replaces
``visual.conv1`` and yields the same ``(B, width, grid, grid)`` map.
"""

from __future__ import annotations

from torch import nn


class ConvStem(nn.Sequential):
    """Stride-2 3x3 convolutions (GELU between them) then a 1x1 projection to the ViT width."""

    def __init__(self, channels: tuple[int, ...], width: int, in_channels: int = 3) -> None:
        layers: list[nn.Module] = []
        for c in channels:
            layers += [nn.Conv2d(in_channels, c, 3, stride=2, padding=1), nn.GELU()]
            in_channels = c
        layers.append(nn.Conv2d(in_channels, width, 1))
        super().__init__(*layers)
        self.stride = 2 ** len(channels)


def install_conv_stem(visual: nn.Module, channels: tuple[int, ...]) -> None:
    """Replace an open_clip ViT's patch projection by a :class:`ConvStem` of the same stride."""
    patch = visual.patch_size[0] if isinstance(visual.patch_size, tuple) else visual.patch_size
    width = visual.class_embedding.shape[-1]
    stem = ConvStem(tuple(channels), width)
    if stem.stride != patch:
        raise ValueError(f"a conv stem of {len(channels)} stride-2 layers has stride {stem.stride}, "
                         f"but the ViT's patch size is {patch}")
    visual.conv1 = stem
