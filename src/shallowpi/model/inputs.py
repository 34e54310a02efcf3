"""Validation of model inputs, with one clear error per problem, and batch-level prefix compaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from shallowpi.model.config import PiConfig


@dataclass
class Prefix:
    images: list[torch.Tensor]  # per kept camera slot, (B, 3, H, W) in [-1, 1]
    img_masks: list[torch.Tensor]  # per kept slot, (B,) bool
    tokens: torch.Tensor  # (B, L) long
    token_masks: torch.Tensor  # (B, L) bool


def pad_last(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Zero-pad the last dimension to `dim` (state/action padding to max dims)."""
    return x if x.shape[-1] == dim else F.pad(x, (0, dim - x.shape[-1]))


def check_inputs(
    cfg: PiConfig,
    images: Sequence[torch.Tensor],
    img_masks: Sequence[torch.Tensor],
    tokens: torch.Tensor,
    token_masks: torch.Tensor,
    state: torch.Tensor | None,
    *,
    compact: bool = True,
) -> tuple[Prefix, torch.Tensor | None]:
    """Validate shapes and types; returns the prefix inputs and the padded state (π0) or None (π0.5)."""
    cams = cfg.cameras
    if not isinstance(images, (list, tuple)) or not isinstance(img_masks, (list, tuple)):
        raise ValueError("images and img_masks must be lists with one entry per camera slot")
    if len(images) != len(cams):
        raise ValueError(
            f"expected {len(cams)} camera images (slots {list(cams)}), got {len(images)}; "
            "pass an all -1 image with mask False for a missing camera"
        )
    if len(img_masks) != len(cams):
        raise ValueError(f"expected {len(cams)} image masks (one per camera slot), got {len(img_masks)}")
    if not torch.is_tensor(tokens) or tokens.ndim != 2:
        raise ValueError(f"tokens: expected a [B, L] tensor, got {getattr(tokens, 'shape', type(tokens))}")
    b = tokens.shape[0]
    size = cfg.vision.image_size
    for name, img, m in zip(cams, images, img_masks, strict=True):
        if not torch.is_tensor(img) or tuple(img.shape) != (b, 3, size, size):
            raise ValueError(
                f"camera '{name}': expected image [B={b}, 3, {size}, {size}], got {tuple(getattr(img, 'shape', ()))}"
            )
        if not img.is_floating_point():
            raise ValueError(f"camera '{name}': expected a float image in [-1, 1], got dtype {img.dtype}")
        if not torch.is_tensor(m) or tuple(m.shape) != (b,) or m.dtype != torch.bool:
            raise ValueError(
                f"camera '{name}': expected a bool mask of shape [{b}], got {getattr(m, 'shape', m)}"
            )
    if not torch.is_tensor(token_masks) or token_masks.shape != tokens.shape:
        raise ValueError(
            f"token_masks shape {tuple(getattr(token_masks, 'shape', ()))} != tokens shape {tuple(tokens.shape)}"
        )
    if token_masks.dtype != torch.bool:
        raise ValueError(f"token_masks: expected dtype bool, got {token_masks.dtype}")
    if tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"tokens: expected integer ids, got dtype {tokens.dtype}")
    if b and (tokens.min() < 0 or tokens.max() >= cfg.vocab_size):
        raise ValueError(
            f"tokens: ids must be in [0, {cfg.vocab_size}), got [{int(tokens.min())}, {int(tokens.max())}]"
        )

    if cfg.variant == "pi0":
        if state is None:
            raise ValueError("state is required for pi0 (it enters the model as the state token)")
        if state.ndim != 2 or state.shape[0] != b:
            raise ValueError(f"state: expected [B={b}, <= {cfg.max_state_dim}], got {tuple(state.shape)}")
        if state.shape[1] > cfg.max_state_dim:
            raise ValueError(f"state dim {state.shape[1]} is above max_state_dim {cfg.max_state_dim}")
        state = pad_last(state.float(), cfg.max_state_dim)
    else:
        state = None  # π0.5 reads the state through the prompt (discretised), not as a token

    images, img_masks = list(images), list(img_masks)
    if compact:
        # A slot masked for every sample contributes only masked keys: skip its vision and prefix work.
        keep = [i for i, m in enumerate(img_masks) if bool(m.any())] or [0]
        images, img_masks = [images[i] for i in keep], [img_masks[i] for i in keep]
        # Language padding shared by the whole batch (right padding) is likewise dropped.
        valid_cols = token_masks.any(dim=0).nonzero()
        length = int(valid_cols.max()) + 1 if len(valid_cols) else 1
        tokens, token_masks = tokens[:, :length], token_masks[:, :length]
    return Prefix(images, img_masks, tokens, token_masks), state
