"""A class-wise cache of test features ranked by entropy: the memory of TDA and BoostAdapter.

Each class has ``capacity`` slots. An entry (a test feature, its prediction's entropy and, for a negative
cache, its class probabilities) goes to the class it was predicted as: into a free slot, else in place of the
class's worst entry when its entropy is strictly lower; a class's entries stay sorted by entropy (a stable
sort: of equal entropies the older comes first). The cache reads out, for a query feature, the affinity
``exp(-beta (1 - query . key))`` of every entry.

The entries are fixed-size tensors (free slots have entropy ``inf``, always after the filled ones), so the whole
cache is a few tensors a safetensors file holds (:meth:`state`) and its read-out is one matrix product.
"""

from __future__ import annotations

import torch

from .base import saved_tensor

__all__ = ["ClassCache"]


class ClassCache:
    """Entropy-ranked per-class slots of test features.

    Args:
        classes, capacity, dim: ``C`` classes of ``capacity`` slots of ``dim``-wide features.
        with_probs: also keep each entry's class probabilities ``(C,)`` (a negative cache).
        fifo: a full class drops its oldest entry for a new one (BoostAdapter's negative cache), entries in the
            order they came.
    """

    def __init__(self, classes: int, capacity: int, dim: int, *, with_probs: bool = False, fifo: bool = False,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        if capacity < 1:
            raise ValueError(f"a cache needs capacity >= 1 per class, got {capacity}")
        self.capacity, self.fifo = capacity, fifo
        self.features = torch.zeros(classes, capacity, dim, device=device, dtype=dtype)
        self.entropy = torch.full((classes, capacity), float("inf"), device=device, dtype=dtype)
        self.probs = torch.zeros(classes, capacity, classes, device=device, dtype=dtype) if with_probs else None

    @property
    def filled(self) -> torch.Tensor:
        """Which slots hold an entry, ``(C, capacity)`` bool."""
        return torch.isfinite(self.entropy)

    def __len__(self) -> int:
        return int(self.filled.sum())

    def admit(self, cls: int, feature: torch.Tensor, entropy: float | torch.Tensor,
              probs: torch.Tensor | None = None) -> bool:
        """Put an entry predicted as ``cls`` in: a free slot, or the worst entry's when its entropy is strictly
        higher; then re-sort the class. A ``fifo`` cache keeps its entries in the order they came and drops the
        oldest of a full class instead. Returns whether it went in."""
        row = self.entropy[cls]
        count = int(torch.isfinite(row).sum())
        entropy = torch.as_tensor(entropy, dtype=row.dtype, device=row.device)
        if self.fifo:
            if count == self.capacity:  # the oldest goes: shift the class's entries one slot to the front
                for tensor in (self.features, self.entropy, self.probs):
                    if tensor is not None:
                        tensor[cls] = tensor[cls].roll(-1, dims=0)
                count -= 1
            self.features[cls, count], row[count] = feature, entropy
            if self.probs is not None:
                self.probs[cls, count] = probs
            return True
        if count < self.capacity:
            slot = count
        elif entropy < row[-1]:
            slot = self.capacity - 1
        else:
            return False
        self.features[cls, slot] = feature
        row[slot] = entropy
        if self.probs is not None:
            self.probs[cls, slot] = probs
        order = torch.sort(row, stable=True).indices
        self.entropy[cls] = row[order]
        self.features[cls] = self.features[cls, order]
        if self.probs is not None:
            self.probs[cls] = self.probs[cls, order]
        return True

    def widened(self, capacity: int) -> ClassCache:
        """A copy of this cache with ``capacity`` slots a class (its entries in the first ones)."""
        if capacity < self.capacity:
            raise ValueError(f"widened: {capacity} slots cannot hold a cache of {self.capacity}")
        classes, _, dim = self.features.shape
        wide = ClassCache(classes, capacity, dim, with_probs=self.probs is not None, fifo=self.fifo,
                          device=self.features.device, dtype=self.features.dtype)
        wide.features[:, :self.capacity] = self.features
        wide.entropy[:, :self.capacity] = self.entropy
        if self.probs is not None:
            wide.probs[:, :self.capacity] = self.probs
        return wide

    def affinity(self, query: torch.Tensor, beta: float) -> torch.Tensor:
        """``exp(-beta (1 - query . key))`` of every slot, ``(C, capacity)``; 0 on free slots."""
        sharp = torch.exp(-beta * (1 - self.features @ query))
        return torch.where(self.filled, sharp, torch.zeros_like(sharp))

    def class_logits(self, query: torch.Tensor, beta: float) -> torch.Tensor:
        """The positive read-out ``(C,)``: each class's summed affinity (its entries' one-hot labels)."""
        return self.affinity(query, beta).sum(dim=1)

    def masked_logits(self, query: torch.Tensor, beta: float, low: float, high: float) -> torch.Tensor:
        """The negative read-out ``(C,)``: the affinities weighted by which classes each entry found unlikely
        (its probability strictly between ``low`` and ``high``)."""
        if self.probs is None:
            raise ValueError("masked_logits needs a cache made with_probs=True")
        mask = ((self.probs > low) & (self.probs < high)).to(self.features.dtype)
        return torch.einsum("ck,ckj->j", self.affinity(query, beta), mask)

    # ------------------------------------------------------------------ state
    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        """The cache as named finite tensors (``prefix.features`` ...; a free slot's entropy is saved as 0, and
        ``prefix.count`` says how many of a class's first slots hold entries)."""
        filled = self.filled
        state = {f"{prefix}.features": self.features, f"{prefix}.entropy": torch.where(filled, self.entropy, 0.0),
                 f"{prefix}.count": filled.sum(dim=1)}
        if self.probs is not None:
            state[f"{prefix}.probs"] = self.probs
        return state

    def load_state(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        """Fill the cache from :meth:`state`'s tensors (a ``ValueError`` names one missing or misshapen)."""
        self.features.copy_(saved_tensor(state, f"{prefix}.features", self.features))
        if self.probs is not None:
            self.probs.copy_(saved_tensor(state, f"{prefix}.probs", self.probs))
        count = saved_tensor(state, f"{prefix}.count", self.filled.sum(dim=1))
        if not ((count >= 0) & (count <= self.capacity)).all():
            raise ValueError(f"the adapter's saved state {prefix}.count holds counts outside 0..{self.capacity}")
        filled = torch.arange(self.capacity, device=count.device)[None] < count[:, None]
        entropy = saved_tensor(state, f"{prefix}.entropy", self.entropy)
        self.entropy.copy_(torch.where(filled, entropy, float("inf")))

    def clear(self) -> None:
        """Empty every slot."""
        self.features.zero_()
        self.entropy.fill_(float("inf"))
        if self.probs is not None:
            self.probs.zero_()
