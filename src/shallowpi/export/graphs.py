"""The two static-shape graphs a runtime needs, written over a `PiModel`'s own modules (no weight copies).

    PrefixGraph:  images, image_masks, tokens, token_masks -> prefix_keys, prefix_values, prefix_mask
                  (an Observation's fields, as tensors: the exporter traces tensor arguments; `prefix_inputs`)
    DenoiseGraph: x_t, t, prefix_mask, prefix_keys, prefix_values (, state for π0) -> velocity

This is the split `InferenceEngine` uses: the prefix (SigLIP + backbone) runs once per observation, the
expert runs once per Euler step against the cached keys/values. The backbone's last layer computes only K and
V (its queries, attention output and MLP never reach the actions).

Differences from the engine, all chosen so that one graph runs in onnxruntime and TensorRT, fp32 or fp16:
- Attention is written out (matmul, fp32 softmax, matmul) instead of SDPA, with the additive mask in fp32
  and the softmax always in fp32, whatever the weights' dtype.
- The prefix mask is key validity only: a padding query attends over the valid keys instead of over
  nothing. Valid tokens see exactly what the engine's (query & key) mask gives them, padding rows never
  reach the actions, and no row is ever fully masked, so no fp16 mask value can turn a row into NaN.
- The mask value is -65504 (the fp16 minimum), exp() of which is exactly 0 in fp32 as well.
- The sin/cos time embedding is computed in fp32 from a range-reduced argument (see `time_features`),
  because TensorRT has no float64; the engine computes it in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from shallowpi.model.gemma import apply_rope, rope_cos_sin
from shallowpi.model.pi import PiModel
from shallowpi.observation import Observation

MASK_VALUE = -65504.0  # finite in fp16; exp(MASK_VALUE + logit) == 0 in fp32


def kv_shape(model: PiModel, batch: int, prefix_len: int) -> tuple[int, ...]:
    c = model.config
    return (c.depth, batch, c.vlm.num_kv_heads, prefix_len, c.vlm.head_dim)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """q (B, nh, Lq, hd); k, v (B, nkv, Lk, hd); bias fp32, broadcastable to (B, nh, Lq, Lk) -> (B, Lq, nh*hd).

    Grouped-query attention without repeating K/V: the g = nh/nkv query heads of one KV head are folded
    into its query length, so both matmuls are plain batched matmuls.
    """
    b, nh, lq, hd = q.shape
    nkv = k.shape[1]
    g = nh // nkv
    qg = (q * hd**-0.5).reshape(b, nkv, g * lq, hd)  # scale first: smaller logits in fp16
    logits = torch.matmul(qg, k.transpose(-1, -2)).float().reshape(b, nh, lq, -1)  # (B, nh, Lq, Lk) fp32
    probs = torch.softmax(logits + bias, dim=-1).to(v.dtype).reshape(b, nkv, g * lq, -1)
    out = torch.matmul(probs, v).reshape(b, nh, lq, hd)  # (B, nh, Lq, hd)
    return out.transpose(1, 2).reshape(b, lq, nh * hd)


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

    def __init__(self, model: PiModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        images: torch.Tensor,  # (B, n_cam, 3, H, W) in [-1, 1], the exported camera slots in prefix order
        image_masks: torch.Tensor,  # (B, n_cam) bool
        tokens: torch.Tensor,  # (B, L) int64
        token_masks: torch.Tensor,  # (B, L) bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m, c = self.model, self.model.config
        b, n_cam = images.shape[:2]
        n_patch = c.vision.num_patches
        pixels = images.transpose(0, 1).reshape(n_cam * b, *images.shape[2:])  # (n_cam*B, 3, H, W)
        vis = m.projector(m.vision(pixels))  # (n_cam*B, N, W_vlm)
        vis = vis.reshape(n_cam, b, n_patch, -1).transpose(0, 1).reshape(b, n_cam * n_patch, -1)
        lang = m.vlm.embed_tokens(tokens)  # (B, L, W_vlm)
        dtype = m.compute_dtype
        x = torch.cat([vis.to(dtype), (lang * math.sqrt(lang.shape[-1])).to(dtype)], dim=1)  # (B, P, W)
        pad = torch.cat([image_masks.repeat_interleave(n_patch, dim=1), token_masks], dim=1)  # (B, P)
        bias = _key_bias(pad)  # (B, 1, 1, P)
        pos = pad.long().cumsum(dim=1) - 1  # padding does not advance the position
        cos, sin = rope_cos_sin(pos, c.vlm.head_dim, c.vlm.rope_theta)
        keys, values = [], []
        for i, layer in enumerate(m.vlm.layers):
            q, k, v = layer.qkv(x)
            k = apply_rope(k, cos, sin)  # (B, nkv, P, hd)
            keys.append(k)
            values.append(v)
            if i == len(m.vlm.layers) - 1:
                break  # the last layer's attention output and MLP never reach the actions
            out = attention(apply_rope(q, cos, sin), k, v, bias)
            x = layer.post_attention(x, out)
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

    def __init__(self, model: PiModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        x_t: torch.Tensor,  # (B, chunk, A) fp32
        t: torch.Tensor,  # (B,) fp32, 1 = noise
        prefix_mask: torch.Tensor,  # (B, P) bool
        prefix_keys: torch.Tensor,  # (D, B, nkv, P, hd)
        prefix_values: torch.Tensor,  # (D, B, nkv, P, hd)
        state: torch.Tensor | None = None,  # (B, max_state_dim) fp32, π0 only
    ) -> torch.Tensor:
        m, c = self.model, self.model.config
        w = c.expert.width
        temb = time_features(t, w, c.min_period, c.max_period).to(m.action_in_proj.weight.dtype)  # (B, W)
        act = m.action_in_proj(x_t)  # (B, chunk, W)
        if c.variant == "pi0":
            state_tok = m.state_proj(state)[:, None]  # (B, 1, W)
            h = torch.cat([act, temb[:, None].expand_as(act)], dim=-1)  # (B, chunk, 2W)
            suffix = torch.cat([state_tok, m.action_time_mlp_out(F.silu(m.action_time_mlp_in(h)))], dim=1)
            cond = None
        else:
            suffix = act
            cond = F.silu(m.time_mlp_out(F.silu(m.time_mlp_in(temb))))  # (B, W) adaRMS conditioning
        b, s = suffix.shape[:2]
        # Suffix blocks: π0 [state | actions], π0.5 [actions]; a block sees earlier blocks and itself.
        n_first = s - c.chunk_size + 1  # tokens up to and including the first action token
        blocks = torch.tensor([*range(n_first), *[n_first - 1] * (c.chunk_size - 1)])  # (S,)
        suffix_ok = (blocks[None, :] <= blocks[:, None])[None].expand(b, s, s)  # (B, S, S) query x key
        ok = torch.cat([prefix_mask[:, None, :].expand(b, s, -1), suffix_ok], dim=2)  # (B, S, P + S)
        bias = _bias(ok)[:, None]  # (B, 1, S, P + S)
        pos = prefix_mask.long().sum(-1, keepdim=True) + torch.arange(s)[None]  # (B, S)
        cos, sin = rope_cos_sin(pos, c.expert.head_dim, c.expert.rope_theta)
        x = suffix.to(m.compute_dtype)
        for i, layer in enumerate(m.expert.layers):
            mod = layer.modulation(cond, x.dtype)
            q, k, v = layer.qkv(x, mod)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            keys = torch.cat([prefix_keys[i], k], dim=2)  # (B, nkv, P + S, hd)
            vals = torch.cat([prefix_values[i], v], dim=2)
            x = layer.post_attention(x, attention(q, keys, vals, bias), mod)
        return m._velocity(x, cond)  # (B, chunk, A) fp32


def _bias(ok: torch.Tensor) -> torch.Tensor:
    return torch.where(ok, torch.zeros((), dtype=torch.float32), torch.full((), MASK_VALUE))


def _key_bias(pad: torch.Tensor) -> torch.Tensor:
    """(B, P) valid keys -> (B, 1, 1, P) fp32 additive bias for every query."""
    return _bias(pad)[:, None, None, :]
