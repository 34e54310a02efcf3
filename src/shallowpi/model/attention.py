"""Masks, positions and the attention kernel shared by the training (joint) and inference (cached) passes.

Masks follow big_vision's `make_attn_mask`: a token may attend to every valid token whose block index
(cumsum of the `causal_block` flags) is <= its own. The additive mask uses openpi's finite constant, so a fully
masked (padding) row becomes a uniform distribution instead of NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MASK_VALUE = -2.3819763e38  # OPENPI_ATTENTION_MASK_VALUE


def make_att_2d(valid: torch.Tensor, causal_block: torch.Tensor) -> torch.Tensor:
    """valid (B, L) bool, causal_block (B, L) int -> (B, L, L) bool: query i may attend key j."""
    cum = causal_block.cumsum(dim=1)
    att = cum[:, None, :] <= cum[:, :, None]
    return att & valid[:, None, :] & valid[:, :, None]


def additive(mask2d: torch.Tensor) -> torch.Tensor:
    """(B, Lq, Lk) bool -> (B, 1, Lq, Lk) fp32 additive mask."""
    zero = torch.zeros((), dtype=torch.float32, device=mask2d.device)
    neg = torch.full((), MASK_VALUE, dtype=torch.float32, device=mask2d.device)
    return torch.where(mask2d[:, None], zero, neg)


def positions(valid: torch.Tensor) -> torch.Tensor:
    """RoPE positions: padded / masked tokens do not advance the position."""
    return valid.long().cumsum(dim=1) - 1


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, want_probs: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """q (B, nh, Lq, hd); k, v (B, nkv, Lk, hd); mask (B, 1, Lq, Lk) fp32 additive.

    Returns out (B, Lq, nh*hd) and, when asked, post-softmax probabilities (B, nh, Lq, Lk) in fp32.
    The output always comes from SDPA so that capturing probabilities never changes it; the probabilities
    are computed on the side (eager, softmax in fp32) from the same q and k, so they carry gradients.
    """
    b, nh, lq, hd = q.shape
    scale = hd**-0.5
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask.to(q.dtype), scale=scale, enable_gqa=k.shape[1] != nh
    )  # (B, nh, Lq, hd)
    out = out.transpose(1, 2).reshape(b, lq, nh * hd)
    probs = None
    if want_probs:
        k_rep = k.repeat_interleave(nh // k.shape[1], dim=1)  # (B, nh, Lk, hd)
        logits = torch.matmul(q, k_rep.transpose(-1, -2)) * scale  # (B, nh, Lq, Lk), model dtype
        probs = torch.softmax(logits.float() + mask, dim=-1)
    return out, probs
