"""Folded weights: a `PiModel`'s weights rearranged once, so that one inference call issues few operators.

    folded = FoldedPi(model)     # copies (the model is not changed); fold again after the weights change

The inference engine (`shallowpi.infer.engine`, its eager loop and its compiled mode) and the ONNX graphs
(`shallowpi.export.graphs`) run over these weights. Every fold is exact math (only rounding differs from the
reference path, `PiModel.sample_actions`: 1e-5 in fp32):

- Gemma RMSNorm's (1 + w) scales the input rows of the projection that follows it: the norm becomes a bare
  RMS (`rms_norm` without weight). adaRMS (π0.5 expert) depends on t, so its scale and shift stay
  per-step inputs (the engine turns the shift into a per-step bias of that projection: shift @ W).
- One matmul per layer for attention: columns [q | k | q·R | k·R | v], with R the RoPE `rotate_half` map
  (a signed permutation of each head's features, exact), so RoPE is `[q|k]·cos + [q|k]·R·sin`, two
  elementwise ops over both q and k, against precomputed cos / sin tables for the whole [q|k] width. The
  softmax scale hd^-0.5 is folded into the q columns (exact for head_dim a power of 4: 16, 64, 256).
- One matmul for the MLP's gate and up projections: columns [gate | up].
- The backbone's last layer keeps only [k | k·R | v] (its queries, output and MLP never reach the actions).
- SigLIP: LayerNorm's affine (g, b) into the next linear (W·g, b·W + bias); q, k, v in one matmul with the
  softmax scale in the q columns; the post-LayerNorm's affine into the multimodal projector.
- π0: `action_in_proj` composed with the action half of `action_time_mlp_in` (one (A -> W) matmul; the
  first's bias goes to the per-step time projection); the final norm's (1 + w) into `action_out_proj`.
- π0.5: every adaRMS dense of every layer (and the final norm's) in one (W -> (2D + 1)·3W) matmul, so the
  modulations of all layers for a batch of t come from one call.

Weights are stored (in, out), contiguous, for `x @ W` / `torch.addmm(bias, x, W)`. The stacks' weights are in
the model's compute dtype (bf16 / fp16 when the model is), folded in fp32 first; what the model keeps in fp32
(norm and adaRMS weights, the projections outside the stacks, the vision embeddings) stays fp32. The token
embedding and SigLIP's patch / position embeddings are shared with the model, not copied.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from shallowpi.model.gemma import GemmaLayer
from shallowpi.model.pi import PiModel, sincos_time_embedding
from shallowpi.model.siglip import SiglipEncoderLayer


class HeadLayout(NamedTuple):
    """Where q, k, v sit in a folded attention matmul's columns (all widths in features)."""

    nh: int
    nkv: int
    hd: int

    @property
    def qk(self) -> int:  # [q | k] block width, the RoPE'd part
        return (self.nh + self.nkv) * self.hd

    @property
    def q(self) -> int:
        return self.nh * self.hd

    @property
    def kv(self) -> int:
        return self.nkv * self.hd

    @property
    def cols(self) -> int:  # [q | k | qR | kR | v]
        return 2 * self.qk + self.kv


def _rotate_rows(w: torch.Tensor, hd: int) -> torch.Tensor:
    """Rows of an (n·hd, in) projection -> the rows of (x @ W.T) followed by RoPE's rotate_half, per head:
    rotate_half(y) = cat(-y2, y1), so the rotated rows are cat(-W2, W1) (exact: a signed permutation)."""
    n = w.shape[0] // hd
    w = w.view(n, hd, -1)
    half = hd // 2
    return torch.cat([-w[:, half:], w[:, :half]], dim=1).reshape(n * hd, -1)


def _t(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(out, in) fp32 -> (in, out) contiguous in `dtype`."""
    return w.detach().t().contiguous().to(dtype)


class FoldedGemmaLayer(nn.Module):
    """One Gemma layer's folded weights: qkv (W, C) [q | k | qR | kR | v], o (nh·hd, W), gate_up (W, 2M),
    down (M, W). `kv_only` keeps [k | kR | v] alone (the backbone's last layer)."""

    def __init__(self, layer: GemmaLayer, *, fold_norms: bool, kv_only: bool = False) -> None:
        super().__init__()
        cfg = layer.cfg
        attn, mlp = layer.self_attn, layer.mlp
        dtype = attn.q_proj.weight.dtype
        self.layout = HeadLayout(cfg.num_heads, cfg.num_kv_heads, cfg.head_dim)
        hd = cfg.head_dim
        q = attn.q_proj.weight.float() * hd**-0.5  # the softmax scale
        k, v = attn.k_proj.weight.float(), attn.v_proj.weight.float()
        rows = [k, _rotate_rows(k, hd), v] if kv_only else [q, k, _rotate_rows(q, hd), _rotate_rows(k, hd), v]
        qkv = torch.cat(rows, dim=0)  # (C, W)
        gate_up = torch.cat([mlp.gate_proj.weight.float(), mlp.up_proj.weight.float()], dim=0)  # (2M, W)
        if fold_norms:  # plain RMSNorm: (1 + w) scales the input features of the next projection
            qkv = qkv * (1.0 + layer.input_layernorm.weight.float())[None]
            gate_up = gate_up * (1.0 + layer.post_attention_layernorm.weight.float())[None]
        self.register_buffer("qkv", _t(qkv, dtype), persistent=False)
        if kv_only:
            return
        self.register_buffer("o", _t(attn.o_proj.weight.float(), dtype), persistent=False)
        self.register_buffer("gate_up", _t(gate_up, dtype), persistent=False)
        self.register_buffer("down", _t(mlp.down_proj.weight.float(), dtype), persistent=False)


class FoldedSiglipLayer(nn.Module):
    def __init__(self, layer: SiglipEncoderLayer, num_heads: int) -> None:
        super().__init__()
        a, m = layer.self_attn, layer.mlp
        dtype = a.q_proj.weight.dtype
        hd = a.head_dim
        f = lambda lin: (lin.weight.float(), lin.bias.float())  # noqa: E731
        (wq, bq), (wk, bk), (wv, bv) = f(a.q_proj), f(a.k_proj), f(a.v_proj)
        w = torch.cat([wq * hd**-0.5, wk, wv])  # (3W, W), the softmax scale in q
        b = torch.cat([bq * hd**-0.5, bk, bv])
        self.num_heads = num_heads
        self.eps = layer.layer_norm1.eps
        qkv, qkv_b = _fold_layer_norm(layer.layer_norm1, w, b)
        fc1, fc1_b = _fold_layer_norm(layer.layer_norm2, *f(m.fc1))
        for name, value in (
            ("qkv", _t(qkv, dtype)),
            ("qkv_b", qkv_b.to(dtype)),
            ("o", _t(a.out_proj.weight.float(), dtype)),
            ("o_b", a.out_proj.bias.to(dtype)),
            ("fc1", _t(fc1, dtype)),
            ("fc1_b", fc1_b.to(dtype)),
            ("fc2", _t(m.fc2.weight.float(), dtype)),
            ("fc2_b", m.fc2.bias.to(dtype)),
        ):
            self.register_buffer(name, value.detach(), persistent=False)

    def forward(self, x: torch.Tensor, n: int, tokens: int) -> torch.Tensor:
        """x (n·N, W) -> (n·N, W): images are independent sequences of N tokens."""
        width = x.shape[-1]
        nh = self.num_heads
        h = F.layer_norm(x, (width,), eps=self.eps)
        qkv = torch.addmm(self.qkv_b, h, self.qkv)  # (n·N, 3W)
        q, k, v = qkv.view(n, tokens, 3, nh, width // nh).permute(2, 0, 3, 1, 4).unbind(0)  # (n, nh, N, hd)
        a = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # bidirectional, scale folded into q
        x = x + torch.addmm(self.o_b, a.transpose(1, 2).reshape(n * tokens, width), self.o)
        h = F.layer_norm(x, (width,), eps=self.eps)
        h = F.gelu(torch.addmm(self.fc1_b, h, self.fc1), approximate="tanh")
        return x + torch.addmm(self.fc2_b, h, self.fc2)


def _fold_layer_norm(ln: nn.LayerNorm, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm(x)·g + beta followed by x @ W.T + b  ==  LayerNorm_noaffine(x) @ (W·g).T + (W @ beta + b)."""
    g, beta = ln.weight.float(), ln.bias.float()
    return w * g[None], b + w @ beta


class Conditioning(NamedTuple):
    """The per-t inputs of the expert, for N values of t (rows).

    π0.5: `mods` (N, 2·depth + 1, 3, W) fp32: [1 + scale, shift, gate] of each adaRMS norm, in order
    (layer 0 attention, layer 0 MLP, layer 1 attention, ..., final norm). π0: `time_proj` (N, W) fp32: the
    time half of `action_time_mlp_in` plus its bias and the folded `action_in_proj` bias.
    """

    mods: torch.Tensor | None
    time_proj: torch.Tensor | None


class FoldedPi(nn.Module):
    """Folded copies of a PiModel's weights (see the module docstring) and the functional folded graph."""

    def __init__(self, model: PiModel) -> None:
        super().__init__()
        c = model.config
        self.config = c
        self.compute_dtype = model.compute_dtype
        self.layout = HeadLayout(c.vlm.num_heads, c.vlm.num_kv_heads, c.vlm.head_dim)
        ada = c.uses_adarms
        with torch.no_grad():
            vis = model.vision
            self.vision_dtype = vis.post_layernorm.weight.dtype
            # shared with the model, not copied (detached: nothing here carries gradients)
            patch = vis.embeddings.patch_embedding
            self.patch_size = patch.stride[0]
            self.register_buffer("patch_w", patch.weight.detach(), persistent=False)
            self.register_buffer("patch_b", patch.bias.detach(), persistent=False)
            self.register_buffer(
                "position", vis.embeddings.position_embedding.weight.detach(), persistent=False
            )
            self.vision_layers = nn.ModuleList(
                FoldedSiglipLayer(layer, c.vision.num_heads) for layer in vis.encoder.layers
            )
            proj, proj_b = _fold_layer_norm(
                vis.post_layernorm, model.projector.weight.float(), model.projector.bias.float()
            )
            pdtype = model.projector.weight.dtype
            self.register_buffer("projector", _t(proj, pdtype), persistent=False)
            self.register_buffer("projector_b", proj_b.detach().to(pdtype), persistent=False)
            self.register_buffer("embed", model.vlm.embed_tokens.weight.detach(), persistent=False)  # shared
            n = len(model.vlm.layers)
            self.vlm = nn.ModuleList(
                FoldedGemmaLayer(layer, fold_norms=True, kv_only=i == n - 1)
                for i, layer in enumerate(model.vlm.layers)
            )
            self.expert = nn.ModuleList(
                FoldedGemmaLayer(layer, fold_norms=not ada) for layer in model.expert.layers
            )
            self._fold_heads(model)

    def _fold_heads(self, model: PiModel) -> None:
        """The projections around the expert stack (fp32, as the model keeps them)."""
        c, w = self.config, self.config.expert.width
        buf = lambda name, value: self.register_buffer(name, value.detach().contiguous(), persistent=False)  # noqa: E731
        out_w = model.action_out_proj.weight.float()  # (A, W)
        buf("out_b", model.action_out_proj.bias.float())
        if c.variant == "pi0":
            buf("out_w", (out_w * (1.0 + model.expert.norm.weight.float())[None]).t())
            w_act = model.action_time_mlp_in.weight[:, :w].float()  # (W, W): acts on action_in_proj's output
            buf("act_in", (w_act @ model.action_in_proj.weight.float()).t())  # (A, W)
            buf("act_in_b", w_act @ model.action_in_proj.bias.float() + model.action_time_mlp_in.bias.float())
            buf(
                "time_w", model.action_time_mlp_in.weight[:, w:].float().t()
            )  # (W, W): acts on the t embedding
            buf("mlp_out", model.action_time_mlp_out.weight.float().t())
            buf("mlp_out_b", model.action_time_mlp_out.bias.float())
            buf("state_w", model.state_proj.weight.float().t())
            buf("state_b", model.state_proj.bias.float())
        else:
            buf("out_w", out_w.t())
            buf("act_in", model.action_in_proj.weight.float().t())
            buf("act_in_b", model.action_in_proj.bias.float())
            buf("time_in", model.time_mlp_in.weight.float().t())
            buf("time_in_b", model.time_mlp_in.bias.float())
            buf("time_out", model.time_mlp_out.weight.float().t())
            buf("time_out_b", model.time_mlp_out.bias.float())
            norms = [
                n
                for layer in model.expert.layers
                for n in (layer.input_layernorm, layer.post_attention_layernorm)
            ]
            norms.append(model.expert.norm)
            buf("ada_w", torch.cat([n.dense.weight.float() for n in norms]).t())  # (W, (2D + 1)·3W)
            buf("ada_b", torch.cat([n.dense.bias.float() for n in norms]))

    # per-t conditioning -----------------------------------------------------------------------------------
    def conditioning(self, temb: torch.Tensor) -> Conditioning:
        """temb (N, W) fp32 sin/cos time embedding -> the expert's per-t inputs for those N rows."""
        if self.config.variant == "pi0":
            return Conditioning(None, torch.addmm(self.act_in_b, temb, self.time_w))
        cond = F.silu(torch.addmm(self.time_in_b, temb, self.time_in))
        cond = F.silu(torch.addmm(self.time_out_b, cond, self.time_out))  # (N, W)
        w = self.config.expert.width
        mods = torch.addmm(self.ada_b, cond, self.ada_w).view(cond.shape[0], -1, 3, w)
        one = torch.tensor([1.0, 0.0, 0.0], device=mods.device)[
            :, None
        ]  # 1 + scale; shift and gate as they are
        return Conditioning(mods + one, None)

    def conditioning_at(self, t: torch.Tensor) -> Conditioning:
        """t (N,) -> conditioning, with the reference path's float64 sin/cos embedding."""
        c = self.config
        return self.conditioning(sincos_time_embedding(t, c.expert.width, c.min_period, c.max_period))

    # functional folded graph (the ONNX graphs and the compiled engine run these) -----------------------------
    def vision(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (n, 3, H, W) in [-1, 1] -> projected image tokens (n, N, W_vlm)."""
        n = pixels.shape[0]
        x = F.conv2d(pixels.to(self.patch_w.dtype), self.patch_w, self.patch_b, stride=self.patch_size)
        x = x.flatten(2).transpose(1, 2) + self.position  # (n, N, Wv)
        tokens, width = x.shape[1], x.shape[2]
        x = x.to(self.vision_dtype).reshape(n * tokens, width)
        for layer in self.vision_layers:
            x = layer(x, n, tokens)
        eps = self.config.vision.layer_norm_eps
        h = F.layer_norm(x, (width,), eps=eps).to(self.projector.dtype)
        return torch.addmm(self.projector_b, h, self.projector).view(n, tokens, -1)

    def embed_language(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) -> (B, L, W_vlm) scaled by sqrt(W_vlm), as PaliGemma embeds its prompt."""
        lang = F.embedding(tokens, self.embed)
        return lang * math.sqrt(lang.shape[-1])

    def rope_tables(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pos (B, L) int -> cos, sin (B, L, (nh + nkv)·hd) fp32 over the [q | k] columns, head by head."""
        lay, c = self.layout, self.config.vlm
        inv_freq = 1.0 / (
            c.rope_theta ** (torch.arange(0, lay.hd, 2, dtype=torch.float32, device=pos.device) / lay.hd)
        )
        freqs = pos.float()[..., None] * inv_freq  # (B, L, hd/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (B, L, hd)
        reps = lay.nh + lay.nkv
        return emb.cos().repeat(1, 1, reps), emb.sin().repeat(1, 1, reps)


def rms(x: torch.Tensor, eps: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    """x / RMS(x) over the last dim (times `weight`, fp32) computed in fp32 and cast back to x's dtype:
    Gemma's norm with its (1 + w) folded away, or adaRMS's 1 + scale as the weight."""
    if torch.onnx.is_in_onnx_export():
        xf = x.float()  # the pattern onnxruntime fuses into SimplifiedLayerNormalization
        y = xf / torch.sqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        return (y if weight is None else y * weight).to(x.dtype)
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    return F.rms_norm(x.float(), (x.shape[-1],), weight, eps).to(x.dtype)
