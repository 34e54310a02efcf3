"""Gemma building blocks: (ada)RMSNorm, RoPE, MLP and the per-layer weights of one stack.

The layer owns its weights and its step (norm -> q/k/v, and o-proj -> gated residual -> MLP -> gated
residual); the attention between the two halves spans both stacks' tokens, so the caller computes it
between `GemmaLayer.qkv` and `GemmaLayer.post_attention`: `pi.py` with `attention.attend`, the inference
engine (`shallowpi.infer.engine`) and the ONNX graphs (`shallowpi.export.graphs`) with their own kernels.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from shallowpi.model.config import GemmaConfig


def rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / RMS(x) over the last dim, in fp32 (Gemma computes every norm in fp32)."""
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class Modulation(NamedTuple):
    """adaRMS modulation computed from the conditioning: y = rms(x)·scale_1p + shift; gate scales the residual.

    The model computes it per call (`GemmaLayer.modulation`); the inference engine computes it once per time
    grid and passes it in, so both run the same layer step.
    """

    scale_1p: torch.Tensor  # (B, 1, W) fp32: 1 + scale
    shift: torch.Tensor  # (B, 1, W) fp32
    gate: torch.Tensor  # (B, 1, W) in the residual stream's dtype


class LayerModulation(NamedTuple):
    attn: Modulation  # input_layernorm and the attention residual
    mlp: Modulation  # post_attention_layernorm and the MLP residual


class RMSNorm(nn.Module):
    """Gemma RMSNorm: computed in fp32, scaled by (1 + w), cast back to the input dtype."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(width))

    def modulation(self, cond: torch.Tensor | None, dtype: torch.dtype) -> None:
        return None  # not conditioned

    def normalize(self, x: torch.Tensor, mod: Modulation | None = None) -> torch.Tensor:
        return (rms(x, self.eps) * (1.0 + self.weight.float())).to(x.dtype)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        return self.normalize(x), None


class AdaRMSNorm(nn.Module):
    """π0.5 expert norm: (scale, shift, gate) = dense(cond); y = rms(x)(1+scale)+shift; gate scales the residual."""

    def __init__(self, width: int, cond_dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond_dim, 3 * width)
        nn.init.zeros_(self.dense.weight)  # identity modulation at init, as openpi

    def modulation(self, cond: torch.Tensor | None, dtype: torch.dtype) -> Modulation:
        """cond (N, cond_dim) -> Modulation of (N, 1, W) tensors; the gate in `dtype` (the stream's)."""
        if cond is None:
            raise ValueError("adaRMS norm needs a conditioning vector (the time embedding)")
        mod = self.dense(cond.to(self.dense.weight.dtype)).float()[:, None]  # (N, 1, 3W)
        scale, shift, gate = mod.chunk(3, dim=-1)
        return Modulation(1.0 + scale, shift, gate.to(dtype))

    def normalize(self, x: torch.Tensor, mod: Modulation | None = None) -> torch.Tensor:
        if mod is None:
            raise ValueError("adaRMS norm needs a conditioning vector (the time embedding)")
        return (rms(x, self.eps) * mod.scale_1p + mod.shift).to(x.dtype)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mod = self.modulation(cond, x.dtype)
        return self.normalize(x, mod), mod.gate


class GemmaMLP(nn.Module):
    def __init__(self, width: int, mlp_dim: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(width, mlp_dim, bias=False)
        self.up_proj = nn.Linear(width, mlp_dim, bias=False)
        self.down_proj = nn.Linear(mlp_dim, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.gate_proj.weight.dtype)
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class GemmaAttentionWeights(nn.Module):
    """q/k/v/o projections of one layer (no bias). The attention itself is computed by the layer's caller:
    `attention.attend` in `pi.py` (see the module docstring)."""

    def __init__(self, cfg: GemmaConfig) -> None:
        super().__init__()
        self.q_proj = nn.Linear(cfg.width, cfg.num_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.width, bias=False)


class GemmaLayer(nn.Module):
    def __init__(self, cfg: GemmaConfig, cond_dim: int | None) -> None:
        super().__init__()
        norm = (
            (lambda: AdaRMSNorm(cfg.width, cond_dim, cfg.rms_eps))
            if cond_dim
            else (lambda: RMSNorm(cfg.width, cfg.rms_eps))
        )
        self.cfg = cfg
        self.self_attn = GemmaAttentionWeights(cfg)
        self.mlp = GemmaMLP(cfg.width, cfg.mlp_dim)
        self.input_layernorm = norm()
        self.post_attention_layernorm = norm()

    # One layer step, in two halves around the attention (which spans both stacks' tokens, so the caller
    # computes it): the model (joint pass, prefix cache, denoise step), the ONNX graphs and the inference
    # engine all run these, so the layer math exists once. The layer has no `forward`: these methods are how
    # it is entered, and each reads its parameters, so FSDP2 must gather them around each one
    # (`distill/parallel.py` registers exactly these and refuses to shard if a public method is missing here).
    ENTRY_METHODS = ("modulation", "qkv", "post_attention")

    def modulation(self, cond: torch.Tensor | None, dtype: torch.dtype) -> LayerModulation | None:
        """adaRMS modulations of both norms from cond (B, cond_dim); None for a plain-RMSNorm layer."""
        attn = self.input_layernorm.modulation(cond, dtype)
        if attn is None:
            return None
        return LayerModulation(attn, self.post_attention_layernorm.modulation(cond, dtype))

    def qkv(
        self, x: torch.Tensor, mod: LayerModulation | None = None, *, queries: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Pre-attention norm and projections of x (B, L, W): q (B, nh, L, hd) (None if not `queries`), k and v
        (B, nkv, L, hd), before RoPE."""
        h = self.input_layernorm.normalize(x, None if mod is None else mod.attn)
        h = h.to(self.self_attn.q_proj.weight.dtype)
        hd = self.cfg.head_dim
        q = _heads(self.self_attn.q_proj(h), hd) if queries else None
        return q, _heads(self.self_attn.k_proj(h), hd), _heads(self.self_attn.v_proj(h), hd)

    def post_attention(
        self, x: torch.Tensor, attn_out: torch.Tensor, mod: LayerModulation | None = None
    ) -> torch.Tensor:
        """o_proj + gated residual, then MLP norm, MLP and gated residual. attn_out (B, L, nh*hd) -> (B, L, W)."""
        y = self.self_attn.o_proj(attn_out.to(self.self_attn.o_proj.weight.dtype))
        x = x + (y if mod is None else y * mod.attn.gate)
        h = self.post_attention_layernorm.normalize(x, None if mod is None else mod.mlp)
        y = self.mlp(h)
        return x + (y if mod is None else y * mod.mlp.gate)


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(B, L, n*hd) -> (B, n, L, hd)."""
    b, n, _ = x.shape
    return x.view(b, n, -1, head_dim).transpose(1, 2)


class GemmaStack(nn.Module):
    """Layers + final norm (+ token embedding for the backbone). Key names follow transformers' GemmaModel."""

    def __init__(self, cfg: GemmaConfig, vocab_size: int | None, cond_dim: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(vocab_size, cfg.width) if vocab_size else None
        self.layers = nn.ModuleList(GemmaLayer(cfg, cond_dim) for _ in range(cfg.depth))
        self.norm = (
            AdaRMSNorm(cfg.width, cond_dim, cfg.rms_eps) if cond_dim else RMSNorm(cfg.width, cfg.rms_eps)
        )


# RoPE (rotate_half convention: the head dim is split into two halves) -------------------------------------


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (B, L) int -> cos, sin (B, 1, L, head_dim) in fp32."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    )
    freqs = positions.float()[..., None] * inv_freq  # (B, L, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, L, hd)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos.to(x.dtype) + rotated * sin.to(x.dtype)).to(x.dtype)
