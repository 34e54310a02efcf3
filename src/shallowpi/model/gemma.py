"""Gemma building blocks: (ada)RMSNorm, RoPE, MLP and the per-layer weights of one stack.

The layer owns its weights only. How the two stacks (backbone and action expert) attend jointly lives in
`joint.py`, because attention there spans both stacks' tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shallowpi.model.config import GemmaConfig


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class RMSNorm(nn.Module):
    """Gemma RMSNorm: computed in fp32, scaled by (1 + w), cast back to the input dtype."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        return (_rms(x, self.eps) * (1.0 + self.weight.float())).to(x.dtype), None


class AdaRMSNorm(nn.Module):
    """π0.5 expert norm: (scale, shift, gate) = dense(cond); y = rms(x)(1+scale)+shift; gate scales the residual."""

    def __init__(self, width: int, cond_dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond_dim, 3 * width)
        nn.init.zeros_(self.dense.weight)  # identity modulation at init, as openpi

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if cond is None:
            raise ValueError("adaRMS norm needs a conditioning vector (the time embedding)")
        mod = self.dense(cond.to(self.dense.weight.dtype)).float()[:, None]  # (B, 1, 3W)
        scale, shift, gate = mod.chunk(3, dim=-1)
        y = _rms(x, self.eps) * (1.0 + scale) + shift
        return y.to(x.dtype), gate.to(x.dtype)


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
    """q/k/v/o projections of one layer (no bias). The attention itself is computed in joint.py."""

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

    def qkv(self, x: torch.Tensor, cond: torch.Tensor | None):
        """Normalise and project. Returns q (B,nh,L,hd), k and v (B,nkv,L,hd), and the residual gate."""
        h, gate = self.input_layernorm(x, cond)
        h = h.to(self.self_attn.q_proj.weight.dtype)
        b, n, _ = h.shape
        hd = self.cfg.head_dim
        q = self.self_attn.q_proj(h).view(b, n, -1, hd).transpose(1, 2)
        k = self.self_attn.k_proj(h).view(b, n, -1, hd).transpose(1, 2)
        v = self.self_attn.v_proj(h).view(b, n, -1, hd).transpose(1, 2)
        return q, k, v, gate

    def finish(
        self, x: torch.Tensor, attn_out: torch.Tensor, gate: torch.Tensor | None, cond: torch.Tensor | None
    ) -> torch.Tensor:
        """o_proj + gated residual, then post-attention norm, MLP and gated residual. attn_out: (B, L, nh*hd)."""
        y = self.self_attn.o_proj(attn_out.to(self.self_attn.o_proj.weight.dtype))
        x = x + (y * gate if gate is not None else y)
        h, gate = self.post_attention_layernorm(x, cond)
        y = self.mlp(h)
        return x + (y * gate if gate is not None else y)


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
