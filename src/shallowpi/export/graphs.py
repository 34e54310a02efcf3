"""The two static-shape graphs a runtime needs, over the folded weights the inference engine runs
(`shallowpi.infer.fold.FoldedPi`: norm weights inside the next projection, one q/k/v + RoPE matmul and one
gate-up matmul per layer, the softmax scale in q, π0.5's adaRMS of every layer from one matmul).

    PrefixGraph:  images, image_masks, tokens, token_masks -> prefix_keys, prefix_values, prefix_mask
                  (an Observation's fields, as tensors: the exporter traces tensor arguments; `prefix_inputs`)
    DenoiseGraph: x_t, t, prefix_mask, prefix_keys, prefix_values (, state for π0) -> velocity

This is the split `InferenceEngine` uses: the prefix (SigLIP + backbone) runs once per observation, the
expert runs once per Euler step against the cached keys/values. The backbone's last layer computes only K and
V (its queries, attention output and MLP never reach the actions).

Differences from the engine, all chosen so that one graph runs in onnxruntime and TensorRT, fp32 or fp16:
- Attention is written out (matmul, fp32 softmax, matmul; `fold.attention`) instead of SDPA, with the
  additive mask in fp32 and the softmax always in fp32, whatever the weights' dtype.
- The prefix mask is key validity only: a padding query attends over the valid keys instead of over
  nothing. Valid tokens see exactly what the engine's (query & key) mask gives them, padding rows never
  reach the actions, and no row is ever fully masked, so no fp16 mask value can turn a row into NaN.
- The mask value is -65504 (the fp16 minimum), exp() of which is exactly 0 in fp32 as well.
- t is an input (any schedule runs), so π0.5's adaRMS modulations are computed in the graph (one matmul for
  every layer) and applied as scale and shift after the RMS (the engine turns the shift into a per-step bias).
- The sin/cos time embedding is computed in fp32 from a range-reduced argument (see `time_features`),
  because TensorRT has no float64; the engine computes it in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from shallowpi.infer.fold import FoldedPi
from shallowpi.model.pi import PiModel
from shallowpi.observation import Observation


def kv_shape(model: PiModel, batch: int, prefix_len: int) -> tuple[int, ...]:
    c = model.config
    return (c.depth, batch, c.vlm.num_kv_heads, prefix_len, c.vlm.head_dim)


def time_features(t: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """t (B,) fp32 -> (B, dim) sin/cos embedding, equal to `sincos_time_embedding` to about 1e-6 in fp32.

    The angle t·2π/period reaches ~1600 rad; computing it directly in fp32 loses ~1e-4 rad. The number of
    whole turns t/period is reduced first: a = frac(t·f_hi + t·f_lo)·2π with the turn frequency 1/period
    split into an exact-ish fp32 head and its residual, so the argument of sin/cos stays within [0, 2π).
    """
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64)
    turns = 1.0 / (min_period * (max_period / min_period) ** fraction)  # turns per unit t, float64
    hi = turns.float()
    lo = (turns - hi.double()).float()
    x_hi = t[:, None] * hi.to(t.device)  # (B, dim/2)
    x_hi_frac = x_hi - torch.floor(x_hi)
    # fp32 rounding error of t * hi, recovered exactly (Dekker's two-product via fma-free splitting)
    err = _two_prod_err(t[:, None], hi.to(t.device), x_hi)
    x = x_hi_frac + (err + t[:, None] * lo.to(t.device))
    x = (x - torch.floor(x)) * (2 * math.pi)
    return torch.cat([torch.sin(x), torch.cos(x)], dim=1)


def _split(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = a * 4097.0  # Veltkamp split for fp32 (2**12 + 1)
    a_hi = c - (c - a)
    return a_hi, a - a_hi


def _two_prod_err(a: torch.Tensor, b: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The exact rounding error a·b − fl(a·b) in fp32 (Dekker), without an fma."""
    a_hi, a_lo = _split(a)
    b_hi, b_lo = _split(b)
    return ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo


class PrefixGraph(nn.Module):
    """Vision + language -> per-layer post-RoPE K/V of the backbone, stacked over layers."""

    def __init__(self, folded: FoldedPi) -> None:
        super().__init__()
        self.folded = folded

    def forward(
        self,
        images: torch.Tensor,  # (B, n_cam, 3, H, W) in [-1, 1], the exported camera slots in prefix order
        image_masks: torch.Tensor,  # (B, n_cam) bool
        tokens: torch.Tensor,  # (B, L) int64
        token_masks: torch.Tensor,  # (B, L) bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, pad = self.folded.prefix_inputs(images, image_masks, tokens, token_masks)  # (B, P, W), (B, P)
        keys, values = self.folded.prefix_kv(x, pad)
        return torch.stack(keys), torch.stack(values), pad  # (D, B, nkv, P, hd) x 2, (B, P)


def prefix_inputs(obs: Observation, slots: Sequence[int] | None = None) -> tuple[torch.Tensor, ...]:
    """`PrefixGraph`'s inputs from an observation, in graph order; `slots`: the exported camera slots'
    indices into the model's slots (None: all). -> images (B, n_cam, 3, H, W), image_masks (B, n_cam),
    tokens (B, L), token_masks (B, L)."""
    images, masks = obs.images, obs.image_masks
    if slots is not None:
        images, masks = images[:, list(slots)], masks[:, list(slots)]
    return images, masks, obs.tokens, obs.token_masks


class DenoiseGraph(nn.Module):
    """One Euler step's velocity: the expert over the suffix against the cached prefix K/V."""

    def __init__(self, folded: FoldedPi) -> None:
        super().__init__()
        self.folded = folded

    def forward(
        self,
        x_t: torch.Tensor,  # (B, chunk, A) fp32
        t: torch.Tensor,  # (B,) fp32, 1 = noise
        prefix_mask: torch.Tensor,  # (B, P) bool
        prefix_keys: torch.Tensor,  # (D, B, nkv, P, hd)
        prefix_values: torch.Tensor,  # (D, B, nkv, P, hd)
        state: torch.Tensor | None = None,  # (B, max_state_dim) fp32, π0 only
    ) -> torch.Tensor:
        f, c = self.folded, self.folded.config
        cond = f.conditioning(time_features(t, c.expert.width, c.min_period, c.max_period))  # rows: B
        state_tok = None if state is None else torch.matmul(state, f.state_w) + f.state_b  # (B, W)
        geometry = f.suffix_geometry(prefix_mask)
        keys, values = list(prefix_keys.unbind(0)), list(prefix_values.unbind(0))
        return f.velocity(x_t, cond, state_tok, keys, values, geometry)  # (B, chunk, A) fp32


def graphs(model: PiModel, *, release: bool = False) -> tuple[PrefixGraph, DenoiseGraph]:
    """Both graphs over one folded copy of `model` (`release`: free the model's own copy of what was folded)."""
    folded = FoldedPi(model, release=release).eval()
    return PrefixGraph(folded).eval(), DenoiseGraph(folded).eval()
