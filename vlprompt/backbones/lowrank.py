"""Low-rank updates of a tower's linear projections (LoRA, Hu et al., ICLR 2022), as a general ability.

A learner that adapts weights instead of inserting tokens hands the backbone, per layer, the updates of
chosen projections (:class:`LowRankUpdate` in ``TextPrompts.low_rank`` / ``ImagePrompts.low_rank``). A
block with updates runs here, with the block's own frozen weights: each projection ``W x + b`` becomes
``W x + b + scale * up @ down @ dropout(x)``. The learner owns ``down`` and ``up`` (so checkpoints hold
only them); the backbone keeps no state and knows no method. Blocks without updates run open_clip's own
forward, so an empty update set changes nothing.

The attention's fused input projection is split into its query, key and value thirds, each with its own
update, as CLIP-LoRA does (one update on the fused projection would share ``down`` across the three).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .prompts import LowRankUpdate

#: the projections of a residual attention block an update may target: the attention's query, key, value
#: and output projections, the MLP's expansion (``fc``) and contraction (``proj``)
PROJECTIONS = ("q", "k", "v", "out", "fc", "proj")


def projection_shapes(block: nn.Module) -> dict[str, tuple[int, int]]:
    """``{projection: (out_features, in_features)}`` of one open_clip residual attention block."""
    attn, mlp = block.attn, block.mlp
    width = attn.embed_dim
    return {"q": (width, width), "k": (width, width), "v": (width, width), "out": tuple(attn.out_proj.weight.shape),
            "fc": tuple(mlp.c_fc.weight.shape), "proj": tuple(mlp.c_proj.weight.shape)}


def check_low_rank(updates: Mapping[int, Mapping[str, LowRankUpdate]], blocks: nn.ModuleList, tower: str) -> None:
    """Fail naming the layer and projection when an update targets what the tower does not have, or has the
    wrong shape (``down`` is ``(r, in)``, ``up`` is ``(out, r)``)."""
    for layer, per_layer in updates.items():
        if not isinstance(layer, int) or not 0 <= layer < len(blocks):
            raise ValueError(f"low-rank updates for {tower} layer {layer!r}: the {tower} tower has {len(blocks)} "
                             "layers")
        block = blocks[layer]
        if not isinstance(getattr(block, "attn", None), nn.MultiheadAttention) or not block.attn._qkv_same_embed_dim:
            raise ValueError(f"low-rank updates need plain attention blocks; {tower} layer {layer} is "
                             f"{type(block).__name__}")
        shapes = projection_shapes(block)
        for name, update in per_layer.items():
            if name not in shapes:
                raise ValueError(
                    f"{tower} layer {layer}: no projection {name!r} (choose from {', '.join(PROJECTIONS)})")
            out_f, in_f = shapes[name]
            rank = update.down.shape[0]
            if update.down.shape != (rank, in_f) or update.up.shape != (out_f, rank):
                raise ValueError(
                    f"{tower} layer {layer} {name}: low-rank update down {tuple(update.down.shape)} / up "
                    f"{tuple(update.up.shape)} do not fit a {in_f} -> {out_f} projection (expected (r, {in_f}) / "
                    f"({out_f}, r))")


def _project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
             update: LowRankUpdate | None) -> torch.Tensor:
    y = F.linear(x, weight, bias)
    if update is None:
        return y
    h = F.dropout(x, update.dropout, training=True) if update.dropout > 0 else x
    return y + update.scale * F.linear(F.linear(h, update.down.to(x.dtype)), update.up.to(x.dtype))


def _attention(attn: nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor | None,
               updates: Mapping[str, LowRankUpdate]) -> torch.Tensor:
    """Batch-first self-attention of ``attn``'s weights with the updates of q, k, v and out."""
    batch, length, width = x.shape
    heads = attn.num_heads
    weights = attn.in_proj_weight.chunk(3)
    biases = attn.in_proj_bias.chunk(3) if attn.in_proj_bias is not None else (None, None, None)
    q, k, v = (_project(x, w, b, updates.get(name)).view(batch, length, heads, width // heads).transpose(1, 2)
               for name, w, b in zip(("q", "k", "v"), weights, biases, strict=True))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask.to(x.dtype))
    out = out.transpose(1, 2).reshape(batch, length, width)
    return _project(out, attn.out_proj.weight, attn.out_proj.bias, updates.get("out"))


def adapted_block(block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None,
                  updates: Mapping[str, LowRankUpdate]) -> torch.Tensor:
    """One open_clip residual attention block (batch-first) with its projections updated."""
    x = x + block.ls_1(_attention(block.attn, block.ln_1(x), mask, updates))
    mlp = block.mlp
    h = _project(block.ln_2(x), mlp.c_fc.weight, mlp.c_fc.bias, updates.get("fc"))
    h = _project(mlp.gelu(h), mlp.c_proj.weight, mlp.c_proj.bias, updates.get("proj"))
    return x + block.ls_2(h)


def run_block(block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None,
              updates: Mapping[str, LowRankUpdate] | None, checkpointed: bool = False) -> torch.Tensor:
    """``block`` on ``x``: :func:`adapted_block` with updates, or when a gradient flows through ``x`` (training
    through the tower); else open_clip's own forward (the frozen, prompt-free path stays bit-identical to it). With
    ``checkpointed`` the block's activations are recomputed in the backward pass.

    Why not open_clip's forward in training: ``nn.MultiheadAttention`` transposes a batch-first input to
    sequence-first and projects the non-contiguous result, which PyTorch computes as a batched matmul with the
    weight expanded over the sequence (on a CPU, 1.6x slower for a MaPLe step on ViT-B/16); the adapted block
    projects the contiguous batch-first input (same numbers up to float rounding, about 1e-6 in the logits)."""
    if updates or (torch.is_grad_enabled() and x.requires_grad):
        updates = updates or {}
        if checkpointed:
            return torch.utils.checkpoint.checkpoint(adapted_block, block, x, mask, updates, use_reentrant=False)
        return adapted_block(block, x, mask, updates)
    if checkpointed:
        return torch.utils.checkpoint.checkpoint(block, x, None, None, mask, use_reentrant=False)
    return block(x, attn_mask=mask)
