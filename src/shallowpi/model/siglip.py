"""SigLIP vision tower (no pooling head) and names matching transformers' SiglipVisionModel keys."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from shallowpi.model.config import SiglipConfig


class SiglipAttention(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.width // cfg.num_heads
        self.q_proj = nn.Linear(cfg.width, cfg.width)
        self.k_proj = nn.Linear(cfg.width, cfg.width)
        self.v_proj = nn.Linear(cfg.width, cfg.width)
        self.out_proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (
            p(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, N, hd)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        out = F.scaled_dot_product_attention(q, k, v)  # (B, nh, N, hd); bidirectional, no mask
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class SiglipMLP(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, cfg.mlp_dim)
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiglipEncoderLayer(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipEmbeddings(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.patch_embedding = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = nn.Embedding(cfg.num_patches, cfg.width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        w = self.patch_embedding.weight
        x = self.patch_embedding(pixels.to(w.dtype))  # (B, W, H/p, W/p)
        x = x.flatten(2).transpose(1, 2)  # (B, N, W), patch index = row * grid + col
        return x + self.position_embedding.weight[None]


class SiglipEncoder(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(cfg) for _ in range(cfg.depth))


def merge_tokens(x: torch.Tensor, grid: int, merge: int) -> torch.Tensor:
    """Pixel shuffle: (B, grid², W) -> (B, (grid/merge)², merge²·W). Merged token (R, C), row-major, is the
    concatenation of patches (R·m + dr, C·m + dc) for dr, then dc, in row-major order."""
    if merge == 1:
        return x
    b, _, w = x.shape
    g = grid // merge
    x = x.reshape(b, g, merge, g, merge, w).permute(0, 1, 3, 2, 4, 5)  # (B, R, C, dr, dc, W)
    return x.reshape(b, g * g, merge * merge * w)


def merge_groups(grid: int, merge: int) -> torch.Tensor:
    """(grid²,) long: the merged token each patch token goes to (its group), in merge_tokens' order."""
    idx = torch.arange(grid * grid)
    row, col = idx // grid, idx % grid
    return (row // merge) * (grid // merge) + col // merge


class SiglipVisionModel(nn.Module):
    """pixels [B, 3, H, W] in [-1, 1] -> last_hidden_state [B, N, width] (after post_layernorm)."""

    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = SiglipEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.gradient_checkpointing = False  # set through PiModel.set_gradient_checkpointing

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(pixels)  # fp32 embeddings even in bf16 mode (LeRobot keeps them fp32)
        x = x.to(self.post_layernorm.weight.dtype)
        ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.encoder.layers:
            x = checkpoint(layer, x, use_reentrant=False) if ckpt else layer(x)
        return self.post_layernorm(x)
