"""A frozen CLIP whose two towers run token by token, so learners can put prompts in them.

With no prompts, :meth:`PromptableCLIP.encode_text` and :meth:`PromptableCLIP.encode_image` give
what open_clip's ``CLIP.encode_text`` / ``encode_image`` give. The text tower stops at the last
end-of-text token of the batch: under the causal mask no position attends to later ones, so the
tokens after it cannot change the pooled feature, and cutting them is exact (and much faster,
since class prompts are short).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import open_clip
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from PIL import Image
from torch import nn

from .checkpoint import state_digest
from .lowrank import check_low_rank, run_block
from .pretrained import WeightsInfo
from .prompts import ImagePrompts, TextPrompts, TokenInsertion
from .tokenizer import PromptTokenizer


def _updates_need_grad(low_rank) -> bool:
    return any(u.down.requires_grad or u.up.requires_grad for per in low_rank.values() for u in per.values())


def _as_groups(tokens: torch.Tensor, rows: int, what: str) -> torch.Tensor:
    """View prompt tokens as ``(G, R|1, n, D)``."""
    if tokens.dim() == 2:
        return tokens[None, None]
    if tokens.dim() == 3:
        if tokens.shape[0] not in (1, rows):
            raise ValueError(f"{what}: {tokens.shape[0]} token sets for {rows} rows")
        return tokens[None]
    if tokens.dim() == 4:
        if tokens.shape[1] not in (1, rows):
            raise ValueError(f"{what}: {tokens.shape[1]} token sets per group for {rows} rows")
        return tokens
    raise ValueError(f"{what}: expected 2-4 dims (n, D) .. (G, R, n, D), got shape {tuple(tokens.shape)}")


class TokenLayout(NamedTuple):
    """Where the end-of-text tokens of a batch of token ids are, held on the CPU."""

    eot: torch.Tensor  #: ``(R,)`` long: index of each row's end-of-text token
    length: int  #: tokens up to and including the last end-of-text token of the batch
    shortest_eot: int  #: the smallest end-of-text index


_LAYOUT_ATTR = "_vlprompt_token_layout"


def token_layout(token_ids: torch.Tensor) -> TokenLayout:
    """The :class:`TokenLayout` of ``token_ids``, computed once per tensor and kept on it.

    Token ids come from the tokenizer on the CPU (and its cache returns the same tensor), so the
    text tower reads lengths and positions without waiting for the device. Ids already on a
    device are copied to the host once, the first time that tensor is seen; an in-place change
    of the ids (a new ``_version``) recomputes it. Inference-mode tensors, which keep no version,
    are read at every call.
    """
    version = None if token_ids.is_inference() else token_ids._version  # inference tensors have no version
    cached = getattr(token_ids, _LAYOUT_ATTR, None)
    if cached is not None and version is not None and cached[0] == version:
        return cached[1]
    if token_ids.dim() != 2 or token_ids.shape[0] == 0:
        raise ValueError(f"token ids must be a non-empty (rows, context) tensor, got shape {tuple(token_ids.shape)}")
    eot = token_ids.detach().cpu().argmax(dim=-1)  # the end-of-text id is the largest in the vocabulary
    layout = TokenLayout(eot, int(eot.max()) + 1, int(eot.min()))
    if version is not None:
        setattr(token_ids, _LAYOUT_ATTR, (version, layout))
    return layout


class PromptableCLIP(nn.Module):
    """A frozen open_clip CLIP with a prompt interface on both towers.

    Build it with :func:`vlprompt.backbones.build_clip`. Its weights never receive gradients and
    it stays in eval mode; gradients flow through it to whatever prompt tensors require them.
    """

    def __init__(self, model: open_clip.CLIP, info: WeightsInfo, text_checkpointing: bool = False,
                 vision_checkpointing: bool = False, weights_digest: str | None = None) -> None:
        super().__init__()
        if not isinstance(model, open_clip.CLIP):
            raise TypeError(f"expected an open_clip CLIP with the text tower on the model, got {type(model)}")
        if model.text_pool_type != "argmax":
            raise ValueError(f"text pooling {model.text_pool_type!r} is not supported (CLIP uses 'argmax')")
        if not model.transformer.batch_first:
            raise ValueError("the text transformer must be batch-first (open_clip >= 2.24)")
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.info = info
        self.tokenizer = PromptTokenizer(model.context_length)
        self._preprocess = None
        #: recompute each text block's activations in the backward pass instead of keeping them
        #: (:meth:`encode_text`): memory for compute when thousands of class prompts need gradients
        self.text_checkpointing = bool(text_checkpointing)
        #: the same for the ViT blocks, when image prompts need gradients (deep visual prompts over a batch)
        self.vision_checkpointing = bool(vision_checkpointing)
        self._weights_digest = weights_digest

    # ------------------------------------------------------------------ description
    @property
    def arch(self) -> str:
        return self.info.arch

    @property
    def weights_digest(self) -> str:
        """What the frozen weights are, for files made on them to record and check: ``"random"`` when the
        backbone was built without weights (never the same twice), else the first 16 hex digits of
        :func:`state_digest` over the weights as loaded (computed once, on first use)."""
        if self._weights_digest is None:
            self._weights_digest = "random" if self.info.pretrained is None else state_digest(self.model.state_dict())
        return self._weights_digest

    @property
    def identity(self) -> dict[str, str | None]:
        """``{"arch", "pretrained", "weights"}``: the backbone a learned file, a GRAM file or an adapter
        state was made on, as recorded in them and compared when they are used."""
        return {"arch": self.arch, "pretrained": self.info.pretrained, "weights": self.weights_digest}

    @property
    def is_vit(self) -> bool:
        """Whether the image tower is a ViT (image prompts need one)."""
        return isinstance(self.model.visual, open_clip.transformer.VisionTransformer)

    @property
    def embed_dim(self) -> int:
        return self.model.text_projection.shape[1]

    @property
    def text_width(self) -> int:
        return self.model.transformer.width

    @property
    def vision_width(self) -> int | None:
        return self.model.visual.class_embedding.shape[-1] if self.is_vit else None

    @property
    def patch_size(self) -> int | None:
        """The ViT's patch size in pixels (before any convolutional stem splits it)."""
        return int(self.model.visual.patch_size[0]) if self.is_vit else None

    @property
    def text_layers(self) -> int:
        return len(self.model.transformer.resblocks)

    @property
    def vision_layers(self) -> int | None:
        return len(self.model.visual.transformer.resblocks) if self.is_vit else None

    @property
    def context_length(self) -> int:
        return self.model.context_length

    @property
    def image_size(self) -> int:
        return self.info.preprocess.image_size

    @property
    def device(self) -> torch.device:
        return self.model.token_embedding.weight.device

    @property
    def logit_scale(self) -> torch.Tensor:
        """The learned temperature, already exponentiated (about 100 for OpenAI's CLIPs)."""
        return self.model.logit_scale.exp()

    def train(self, mode: bool = True) -> PromptableCLIP:
        """The backbone is frozen: it stays in eval mode (BatchNorm statistics included)."""
        super().train(mode)
        self.model.eval()
        return self

    # ------------------------------------------------------------------ inputs
    @property
    def preprocess(self):
        """The test-time transform the weights were trained with (PIL image to tensor)."""
        if self._preprocess is None:
            pre = self.info.preprocess
            self._preprocess = open_clip.image_transform(
                pre.image_size, is_train=False, mean=pre.mean, std=pre.std,
                resize_mode=pre.resize_mode, interpolation=pre.interpolation,
            )
        return self._preprocess

    def prepare_images(self, images) -> torch.Tensor:
        """A batch tensor on the backbone's device.

        Accepts a PIL image, a ``(H, W, 3)`` uint8 numpy array, an image path, or a list of any of
        these (each is preprocessed as the weights were trained: resize, crop, normalise); or a
        float tensor ``(3, S, S)`` / ``(B, 3, S, S)`` that is already preprocessed, used as given.
        Anything else is an error that says what was expected.
        """
        import os

        import numpy as np

        single = (Image.Image, np.ndarray, str, os.PathLike)
        if isinstance(images, single):
            images = [images]
        if isinstance(images, torch.Tensor):
            return self._check_image_tensor(images).to(self.device)
        if not isinstance(images, Sequence) or not images:
            raise TypeError(f"images: expected PIL images, numpy arrays, paths or a float tensor, "
                            f"got {type(images).__name__}{' (empty)' if isinstance(images, Sequence) else ''}")
        batch = []
        for i, image in enumerate(images):
            if isinstance(image, (str, os.PathLike)):
                try:
                    with Image.open(image) as opened:
                        image = opened.convert("RGB")
                except OSError as err:
                    raise ValueError(f"images[{i}]: cannot read {image}: {err}") from None
            elif isinstance(image, np.ndarray):
                if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
                    raise ValueError(f"images[{i}]: a numpy image must be uint8 (H, W) or (H, W, 3), "
                                     f"got {image.dtype} {image.shape}")
                image = Image.fromarray(image)
            elif not isinstance(image, Image.Image):
                raise TypeError(f"images[{i}]: expected a PIL image, a numpy array or a path, "
                                f"got {type(image).__name__}")
            batch.append(self.preprocess(image.convert("RGB")))
        return torch.stack(batch).to(self.device)

    def _check_image_tensor(self, images: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        if not images.is_floating_point():
            raise TypeError(f"images: a {images.dtype} tensor is not a preprocessed image batch; pass PIL images, "
                            f"numpy arrays or paths (preprocessed for you), or a float tensor already resized to "
                            f"{size}x{size} and normalised")
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"images: expected a float tensor of shape (B, 3, {size}, {size}) for {self.arch}, "
                             f"got {tuple(images.shape)}; pass PIL images to have them resized")
        return images

    def tokenize(self, texts: Sequence[str] | str, reserve: int = 0) -> torch.Tensor:
        """Token ids (cached per text list); ``reserve`` keeps context slots for prompt tokens."""
        return self.tokenizer(texts, reserve=reserve)

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (used to initialise context vectors from words)."""
        return self.model.token_embedding(token_ids.to(self.device))

    # ------------------------------------------------------------------ text tower
    def encode_text(
        self, token_ids: torch.Tensor, prompts: TextPrompts | None = None, normalize: bool = False
    ) -> torch.Tensor:
        """Text features ``(R, E)``, or ``(G, R, E)`` when prompts come per group (image).

        Args:
            token_ids: ``(R, context)`` ids from :meth:`tokenize`.
            prompts: shallow insertions and deep prompts; ``None`` gives open_clip's features.
            normalize: L2-normalise the features.

        With :attr:`text_checkpointing` on, a pass that needs gradients keeps only each block's
        input and recomputes the block in the backward pass (same features and gradients).
        """
        m = self.model
        rows = token_ids.shape[0]
        layout = token_layout(token_ids)
        eot, shortest = layout.eot, layout.shortest_eot
        ids = token_ids[:, : layout.length].to(self.device)
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(ids).to(cast)
        groups = None
        if prompts is not None and prompts.insert:
            x, eot, groups = self._insert_tokens(x, eot, prompts.insert, cast)
            shortest += sum(ins.tokens.shape[-2] for ins in prompts.insert)
        length = x.shape[1]
        if length > self.context_length:
            raise ValueError(
                f"prompted text is {length} tokens long, more than the {self.context_length}-token context"
            )
        x = x + m.positional_embedding[:length].to(cast)
        mask = m.attn_mask[:length, :length].to(cast)
        deep = prompts.deep if prompts is not None else {}
        if deep:
            self._check_layers(deep, self.text_layers, "text")
            n_max = max(t.shape[-2] for t in deep.values())
            if prompts.deep_start < 1 or prompts.deep_start + n_max > shortest:
                raise ValueError(
                    f"deep text prompts at [{prompts.deep_start}, {prompts.deep_start + n_max}) would "
                    f"overwrite the start or end-of-text token (shortest prompt ends at {shortest})"
                )
        low_rank = prompts.low_rank if prompts is not None else {}
        if low_rank:
            check_low_rank(low_rank, m.transformer.resblocks, "text")
        checkpointed = self.text_checkpointing and torch.is_grad_enabled() and (
            x.requires_grad or any(t.requires_grad for t in deep.values()) or _updates_need_grad(low_rank))
        for i, block in enumerate(m.transformer.resblocks):
            if i in deep:
                tokens = _as_groups(deep[i].to(cast), rows, f"deep text prompt {i}")
                g = x.shape[0] // rows
                tokens = tokens.expand(g, rows, -1, -1).reshape(g * rows, *tokens.shape[-2:])
                s = prompts.deep_start
                x = torch.cat([x[:, :s], tokens, x[:, s + tokens.shape[1] :]], dim=1)
            x = run_block(block, x, mask, low_rank.get(i), checkpointed)
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot.to(x.device)]
        x = m.text_projection(x) if isinstance(m.text_projection, nn.Linear) else x @ m.text_projection
        if groups is not None:
            x = x.reshape(groups, rows, -1)
        return F.normalize(x, dim=-1) if normalize else x

    @staticmethod
    def _insert_tokens(
        x: torch.Tensor, eot: torch.Tensor, inserts: Sequence[TokenInsertion], cast: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, int | None]:
        """Insert token sets into ``(R, L, D)`` embeddings at per-row positions.

        ``eot`` holds the end-of-text indices on the CPU. Positions given as ints or CPU tensors are
        checked and turned into a gather order on the CPU, so nothing is read back from the device;
        a position tensor on the device is read once to check it (pass ints or CPU tensors to avoid
        that). Returns the ``(G*R, L', D)`` sequence, the new end-of-text indices (CPU) and the
        number of groups (``None`` when no insertion came with a group dimension).
        """
        rows, length, width = x.shape
        token_sets = [_as_groups(ins.tokens.to(cast), rows, f"insertion {k}") for k, ins in enumerate(inserts)]
        groups = max(t.shape[0] for t in token_sets)
        for k, t in enumerate(token_sets):
            if t.shape[0] not in (1, groups):
                raise ValueError(f"insertion {k} has {t.shape[0]} groups, others have {groups}")
            if t.shape[-1] != width:
                raise ValueError(f"insertion {k} has width {t.shape[-1]}, the text tower has {width}")
        positions = [torch.as_tensor(ins.position).detach().cpu().long().expand(rows) for ins in inserts]
        for k, pos in enumerate(positions):
            if bool((pos < 0).any()) or bool((pos > eot).any()):
                raise ValueError(f"insertion {k}: positions must lie in [0, end-of-text index]")
        counts = [t.shape[2] for t in token_sets]
        # Destination index of every source token: originals shift right past earlier insertions;
        # an insertion lands at its position, after insertions at smaller (or equal, earlier) ones.
        t_idx = torch.arange(length).expand(rows, length)
        dest = [t_idx + sum(n * (pos[:, None] <= t_idx) for n, pos in zip(counts, positions, strict=True))]
        for k, (n, pos) in enumerate(zip(counts, positions, strict=True)):
            before = sum(
                counts[j] * ((positions[j] < pos) | ((positions[j] == pos) & (j < k))) for j in range(len(counts))
            )
            dest.append((pos + before)[:, None] + torch.arange(n))
        order = torch.cat(dest, dim=1).argsort(dim=1).to(x.device)
        src = torch.cat(
            [x[None].expand(groups, -1, -1, -1)] + [t.expand(groups, rows, -1, -1) for t in token_sets], dim=2
        )
        out = src.gather(2, order[None, :, :, None].expand(groups, -1, -1, width))
        new_eot = eot + sum(counts)  # every position lies at or before the end-of-text token
        grouped = any(ins.tokens.dim() == 4 for ins in inserts)
        out = out.reshape(groups * rows, -1, width)
        return out, new_eot.repeat(groups), (groups if grouped else None)

    # ------------------------------------------------------------------ image tower
    def encode_image(
        self, images: torch.Tensor, prompts: ImagePrompts | None = None, normalize: bool = False,
        return_tokens: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Image features ``(B, E)``; prompts need a ViT image tower.

        Args:
            images: a preprocessed ``(B, 3, S, S)`` batch.
            prompts: shallow / deep image prompts (ViT only); ``None`` gives open_clip's features.
            normalize: L2-normalise the pooled features (the patch tokens are never normalised).
            return_tokens: also return the patch tokens, ``(pooled, tokens)`` with tokens
                ``(B, N, E)``: the ``N`` patch positions of the last layer (no class token, no
                appended prompt tokens), after the final LayerNorm and the same output projection
                as the pooled feature, so both live in the joint image-text space (ViT only).
        """
        visual = self.model.visual
        images = images.to(self.device)
        if not self.is_vit:
            if prompts is not None:
                raise ValueError(
                    f"image prompts need a ViT image tower; {self.arch} has a {type(visual).__name__} "
                    "(use text-side prompts only)"
                )
            if return_tokens:
                raise ValueError(f"patch tokens need a ViT image tower; {self.arch} has a {type(visual).__name__}")
            x = visual(images.to(visual.conv1.weight.dtype))
            return F.normalize(x, dim=-1) if normalize else x
        if visual.attn_pool is not None or not visual.transformer.batch_first:
            raise ValueError(f"{self.arch}: only plain CLIP ViT towers are supported")
        dtype = visual.class_embedding.dtype
        x = visual.conv1(images.to(dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        x = visual.patch_dropout(x)
        n_prompt = 0
        batch = x.shape[0]
        late = prompts is not None and prompts.after_ln_pre
        if late:
            x = visual.ln_pre(x)
        if prompts is not None and prompts.tokens is not None:
            tokens = self._batch_tokens(prompts.tokens, batch, "image prompt", x.dtype)
            n_prompt = tokens.shape[1]
            x = torch.cat([x, tokens], dim=1)
        if not late:
            x = visual.ln_pre(x)
        deep = prompts.deep if prompts is not None else {}
        if deep:
            self._check_layers(deep, self.vision_layers, "image")
        low_rank = prompts.low_rank if prompts is not None else {}
        if low_rank:
            check_low_rank(low_rank, visual.transformer.resblocks, "image")
        checkpointed = self.vision_checkpointing and torch.is_grad_enabled() and (
            x.requires_grad or any(t.requires_grad for t in deep.values()) or _updates_need_grad(low_rank))
        for i, block in enumerate(visual.transformer.resblocks):
            if i in deep:
                tokens = self._batch_tokens(deep[i], batch, f"deep image prompt {i}", x.dtype)
                if tokens.shape[1] != n_prompt:
                    raise ValueError(
                        f"deep image prompt {i} has {tokens.shape[1]} tokens but {n_prompt} prompt tokens "
                        "were appended to the input (deep prompts replace them)"
                    )
                x = torch.cat([x[:, : x.shape[1] - n_prompt], tokens], dim=1)
            x = run_block(block, x, None, low_rank.get(i), checkpointed)
        pooled, tokens = visual._pool(x)
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        pooled = F.normalize(pooled, dim=-1) if normalize else pooled
        if not return_tokens:
            return pooled
        if visual.pool_type not in ("tok", "avg"):
            raise ValueError(f"{self.arch}: patch tokens need class-token or average pooling, not {visual.pool_type!r}")
        tokens = tokens[:, : tokens.shape[1] - n_prompt]  # the patch positions only
        if visual.final_ln_after_pool:  # open_clip normalises only the pooled token then
            tokens = visual.ln_post(tokens)
        if visual.proj is not None:
            tokens = tokens @ visual.proj
        return pooled, tokens

    @staticmethod
    def _batch_tokens(tokens: torch.Tensor, batch: int, what: str, dtype: torch.dtype) -> torch.Tensor:
        if tokens.dim() == 2:
            return tokens.to(dtype)[None].expand(batch, -1, -1)
        if tokens.dim() == 3 and tokens.shape[0] in (1, batch):
            return tokens.to(dtype).expand(batch, -1, -1)
        raise ValueError(f"{what}: expected (n, D) or ({batch}, n, D), got {tuple(tokens.shape)}")

    @staticmethod
    def _check_layers(deep, layers: int | None, tower: str) -> None:
        bad = [i for i in deep if not 0 <= i < (layers or 0)]
        if bad:
            raise ValueError(f"deep {tower} prompts for layers {bad}: the {tower} tower has {layers} layers")
