"""Frozen image features of a whole dataset, computed once."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..backbones import PromptableCLIP


@torch.no_grad()
def extract_features(
    backbone: PromptableCLIP,
    dataset: Dataset,
    batch_size: int = 256,
    num_workers: int = 0,
    desc: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised image features ``(N, E)`` and labels ``(N,)`` of a dataset of ``{'img', 'label'}``."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    feats, labels = [], []
    for batch in tqdm(loader, desc=desc, leave=False, disable=desc is None):
        feats.append(backbone.encode_image(batch["img"], normalize=True).float().cpu())
        labels.append(torch.as_tensor(batch["label"]))
    return torch.cat(feats), torch.cat(labels)
