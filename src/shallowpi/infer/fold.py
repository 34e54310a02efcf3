"""Folded weights: a `PiModel`'s weights rearranged once, so that one inference call issues few operators.

    folded = FoldedPi(model)     # copies (the model is not changed); fold again after the weights change

The inference engine (`shallowpi.infer.engine`, its eager loop and its compiled mode) and the ONNX graphs
(`shallowpi.export.graphs`) run over these weights. Every fold is exact math (only rounding differs from the
reference path, `PiModel.sample_actions`: 1e-5 in fp32):

- Gemma RMSNorm's (1 + w) scales the input rows of the projection that follows it: the norm becomes a bare
  RMS (`rms_norm` without weight). adaRMS (π0.5 expert) depends on t, so its scale and shift stay
  per-step inputs (the engine turns the shift into a per-step bias of that projection: shift @ W).
- One matmul per layer for attention: columns [q | k | v]. RoPE runs over q and k together against tables
  for the whole [q | k] width with rotate_half's sign carried by the sin table: x·cos + swap(x)·sin, swap
  exchanging the two halves of every head (a permutation: exact). The softmax scale hd^-0.5 is folded into
  the q columns (exact for head_dim a power of 4: 16, 64, 256).
- One matmul for the MLP's gate and up projections: columns [gate | up].
- The backbone's last layer keeps only [k | v] (its queries, output and MLP never reach the actions).
- SigLIP: LayerNorm's affine (g, b) into the next linear (W·g, b·W + bias); q, k, v in one matmul with the
  softmax scale in the q columns; the post-LayerNorm's affine into the multimodal projector (repeated over
  the m² patches of a merged token when the config merges image tokens).
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
from shallowpi.model.siglip import SiglipEncoderLayer, merge_tokens


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
    def cols(self) -> int:  # [q | k | v]
        return self.qk + self.kv

    def swap_halves(self, device=None) -> torch.Tensor:
        """Column index that swaps the two halves of every head of the [q | k] block: x[..., idx] = [x2, x1]
        per head (RoPE's rotate_half without its sign, which the sin table carries)."""
        half = self.hd // 2
        head = torch.cat([torch.arange(half, self.hd), torch.arange(half)])
        return (torch.arange(self.nh + self.nkv)[:, None] * self.hd + head).flatten().to(device)


def _t(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(out, in) fp32 -> (in, out) contiguous in `dtype`."""
    return w.detach().t().contiguous().to(dtype)


class FoldedGemmaLayer(nn.Module):
    """One Gemma layer's folded weights: qkv (W, C) [q | k | v], o (nh·hd, W), gate_up (W, 2M), down (M, W).
    `kv_only` keeps [k | v] alone (the backbone's last layer)."""

    def __init__(self, layer: GemmaLayer, *, fold_norms: bool, kv_only: bool = False) -> None:
        """`fold_norms`: (1 + w) of plain RMSNorms into the projections (else kept as `in_norm` / `post_norm`,
        the norm's weight); adaRMS layers have no static weight."""
        super().__init__()
        cfg = layer.cfg
        attn, mlp = layer.self_attn, layer.mlp
        dtype = attn.q_proj.weight.dtype
        plain = not hasattr(layer.input_layernorm, "dense")
        self.layout = HeadLayout(cfg.num_heads, cfg.num_kv_heads, cfg.head_dim)
        hd = cfg.head_dim
        q = attn.q_proj.weight.float() * hd**-0.5  # the softmax scale
        k, v = attn.k_proj.weight.float(), attn.v_proj.weight.float()
        qkv = torch.cat([k, v] if kv_only else [q, k, v], dim=0)  # (C, W)
        gate_up = torch.cat([mlp.gate_proj.weight.float(), mlp.up_proj.weight.float()], dim=0)  # (2M, W)
        for name in ("in_norm", "post_norm"):  # (1 + w) fp32 when not folded (adaRMS: None)
            self.register_buffer(name, None)
        if plain and fold_norms:  # (1 + w) scales the input features of the next projection
            qkv = qkv * (1.0 + layer.input_layernorm.weight.float())[None]
            gate_up = gate_up * (1.0 + layer.post_attention_layernorm.weight.float())[None]
        elif plain:
            self.register_buffer("in_norm", 1.0 + layer.input_layernorm.weight.detach().float())
            self.register_buffer("post_norm", 1.0 + layer.post_attention_layernorm.weight.detach().float())
        self.register_buffer("qkv", _t(qkv, dtype))
        if kv_only:
            return
        self.register_buffer("o", _t(attn.o_proj.weight.float(), dtype))
        self.register_buffer("gate_up", _t(gate_up, dtype))
        self.register_buffer("down", _t(mlp.down_proj.weight.float(), dtype))


class FoldedSiglipLayer(nn.Module):
    """One SigLIP layer: q/k/v in one matmul with the softmax scale in q; with `fold` (fp32), each
    LayerNorm's affine inside the linear after it (else the LayerNorms keep it, as the model computes them)."""

    def __init__(self, layer: SiglipEncoderLayer, num_heads: int, *, fold: bool) -> None:
        super().__init__()
        a, m = layer.self_attn, layer.mlp
        dtype = a.q_proj.weight.dtype
        # the softmax scale into q where that is exact or fp32 (bf16: hd = 72 in SigLIP So400m is not)
        hd = a.head_dim
        exact = hd & (hd - 1) == 0 and (hd.bit_length() - 1) % 2 == 0  # a power of 4: hd^-0.5 is a power of 2
        scale = hd**-0.5 if fold or exact else 1.0  # into q
        self.sdpa_scale = hd**-0.5 / scale  # what SDPA still applies
        f = lambda lin: (lin.weight.float(), lin.bias.float())  # noqa: E731
        (wq, bq), (wk, bk), (wv, bv) = f(a.q_proj), f(a.k_proj), f(a.v_proj)
        qkv, qkv_b = torch.cat([wq * scale, wk, wv]), torch.cat([bq * scale, bk, bv])  # (3W, W), (3W,)
        fc1, fc1_b = f(m.fc1)
        self.num_heads = num_heads
        self.eps = layer.layer_norm1.eps
        for name in ("ln1", "ln1_b", "ln2", "ln2_b"):
            self.register_buffer(name, None)
        if fold:
            qkv, qkv_b = _fold_layer_norm(layer.layer_norm1, qkv, qkv_b)
            fc1, fc1_b = _fold_layer_norm(layer.layer_norm2, fc1, fc1_b)
        else:
            for name, p in (("ln1", layer.layer_norm1.weight), ("ln1_b", layer.layer_norm1.bias)):
                self.register_buffer(name, p.detach())
            for name, p in (("ln2", layer.layer_norm2.weight), ("ln2_b", layer.layer_norm2.bias)):
                self.register_buffer(name, p.detach())
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
            self.register_buffer(name, value.detach())

    def forward(self, x: torch.Tensor, n: int, tokens: int) -> torch.Tensor:
        """x (n·N, W) -> (n·N, W): images are independent sequences of N tokens."""
        width = x.shape[-1]
        nh = self.num_heads
        h = F.layer_norm(x, (width,), self.ln1, self.ln1_b, eps=self.eps)
        qkv = torch.addmm(self.qkv_b, h, self.qkv)  # (n·N, 3W)
        q, k, v = qkv.view(n, tokens, 3, nh, width // nh).permute(2, 0, 3, 1, 4).unbind(0)  # (n, nh, N, hd)
        a = F.scaled_dot_product_attention(q, k, v, scale=self.sdpa_scale)  # bidirectional
        x = x + torch.addmm(self.o_b, a.transpose(1, 2).reshape(n * tokens, width), self.o)
        h = F.layer_norm(x, (width,), self.ln2, self.ln2_b, eps=self.eps)
        h = F.gelu(torch.addmm(self.fc1_b, h, self.fc1), approximate="tanh")
        return x + torch.addmm(self.fc2_b, h, self.fc2)


def _fold_layer_norm(
    ln: nn.LayerNorm, w: torch.Tensor, b: torch.Tensor, *, repeat: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm(x)·g + beta followed by x @ W.T + b  ==  LayerNorm_noaffine(x) @ (W·g).T + (W @ beta + b).
    `repeat`: W's input is `repeat` normalised vectors concatenated (merged image tokens), each with the affine."""
    g, beta = ln.weight.float().repeat(repeat), ln.bias.float().repeat(repeat)
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
    """Folded copies of a PiModel's weights (see the module docstring) and the functional folded graph.

    `release=True` frees the model's own copy of every weight once it is folded (the model is unusable
    afterwards): what a one-shot export of a full-size model does to keep a single copy in memory."""

    def __init__(self, model: PiModel, *, release: bool = False) -> None:
        super().__init__()
        c = model.config
        self.config = c
        self.compute_dtype = model.compute_dtype
        self.layout = HeadLayout(c.vlm.num_heads, c.vlm.num_kv_heads, c.vlm.head_dim)
        # fp32: norm weights and affines inside the next projection. In bf16 / fp16 they stay the norms' own
        # weights: folding them would round other products than the model rounds (bf16 actions drift 2x more).
        fold = self.fold_norms = self.compute_dtype == torch.float32
        vis = model.vision
        shared = {vis.embeddings.patch_embedding.weight, vis.embeddings.patch_embedding.bias}
        shared |= {vis.embeddings.position_embedding.weight, model.vlm.embed_tokens.weight}

        def done(*modules: nn.Module) -> None:  # `release`: free what was just folded, as it goes
            for p in (p for m in modules if release for p in m.parameters() if p not in shared):
                p.data = torch.empty(0, dtype=p.dtype, device=p.device)

        with torch.no_grad():
            self.vision_dtype = vis.post_layernorm.weight.dtype
            # shared with the model, not copied (detached: nothing here carries gradients)
            patch = vis.embeddings.patch_embedding
            self.patch_size = patch.stride[0]
            self.register_buffer("patch_w", patch.weight.detach())
            self.register_buffer("patch_b", patch.bias.detach())
            self.register_buffer("position", vis.embeddings.position_embedding.weight.detach())
            self.vision_layers = nn.ModuleList()
            for layer in vis.encoder.layers:
                self.vision_layers.append(FoldedSiglipLayer(layer, c.vision.num_heads, fold=fold))
                done(layer)
            proj, proj_b = model.projector.weight.float(), model.projector.bias.float()
            ln = vis.post_layernorm
            self.register_buffer("post_ln", None)
            self.register_buffer("post_ln_b", None)
            if (
                fold
            ):  # a merged token is m² post-LayerNorm'd patches side by side: the affine repeats m² times
                proj, proj_b = _fold_layer_norm(ln, proj, proj_b, repeat=c.vision.merge**2)
            else:
                self.register_buffer("post_ln", ln.weight.detach())
                self.register_buffer("post_ln_b", ln.bias.detach())
            pdtype = model.projector.weight.dtype
            self.register_buffer("projector", _t(proj, pdtype))
            self.register_buffer("projector_b", proj_b.detach().to(pdtype))
            done(vis, model.projector)
            self.register_buffer("embed", model.vlm.embed_tokens.weight.detach())  # shared
            self._fold_heads(model)  # first: π0.5's adaRMS denses live in the expert's layers
            n = len(model.vlm.layers)
            self.vlm, self.expert = nn.ModuleList(), nn.ModuleList()
            for i, layer in enumerate(model.vlm.layers):
                self.vlm.append(FoldedGemmaLayer(layer, fold_norms=fold, kv_only=i == n - 1))
                done(layer)
            for layer in model.expert.layers:
                self.expert.append(FoldedGemmaLayer(layer, fold_norms=fold))
                done(layer)
            done(model)

    def _fold_heads(self, model: PiModel) -> None:
        """The projections around the expert stack (fp32, as the model keeps them)."""
        c, w = self.config, self.config.expert.width
        buf = lambda name, value: self.register_buffer(name, value.detach().contiguous())  # noqa: E731
        out_w = model.action_out_proj.weight.float()  # (A, W)
        buf("out_b", model.action_out_proj.bias.float())
        self.register_buffer("final_norm", None)  # π0's final (1 + w) when not folded into action_out_proj
        if c.variant == "pi0":
            final = 1.0 + model.expert.norm.weight.float()
            if self.fold_norms:
                buf("out_w", (out_w * final[None]).t())
            else:
                buf("out_w", out_w.t())
                buf("final_norm", final)
            w_act = model.action_time_mlp_in.weight[:, :w].float()  # (W, W): acts on action_in_proj's output
            buf("act_in", (w_act @ model.action_in_proj.weight.float()).t())  # (A, W)
            buf("act_in_b", w_act @ model.action_in_proj.bias.float() + model.action_time_mlp_in.bias.float())
            buf("time_w", model.action_time_mlp_in.weight[:, w:].float().t())  # (W, W): on the t embedding
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
        one = torch.tensor([1.0, 0.0, 0.0], device=mods.device)[:, None]  # 1 + scale; shift, gate as are
        return Conditioning(mods + one, None)

    def conditioning_at(self, t: torch.Tensor) -> Conditioning:
        """t (N,) -> conditioning, with the reference path's float64 sin/cos embedding."""
        c = self.config
        return self.conditioning(sincos_time_embedding(t, c.expert.width, c.min_period, c.max_period))

    # functional folded graph (the ONNX graphs and the compiled engine run these) -----------------------------
    def vision(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (n, 3, H, W) in [-1, 1] -> projected image tokens (n, num_tokens, W_vlm): SigLIP, its
        tokens merged m x m (`merge_tokens`), the projector."""
        v = self.config.vision
        n = pixels.shape[0]
        x = F.conv2d(pixels.to(self.patch_w.dtype), self.patch_w, self.patch_b, stride=self.patch_size)
        x = x.flatten(2).transpose(1, 2) + self.position  # (n, N_patch, Wv)
        tokens, width = x.shape[1], x.shape[2]
        x = x.to(self.vision_dtype).reshape(n * tokens, width)
        for layer in self.vision_layers:
            x = layer(x, n, tokens)
        h = F.layer_norm(x, (width,), self.post_ln, self.post_ln_b, eps=v.layer_norm_eps)  # (n·N_patch, Wv)
        h = merge_tokens(h.view(n, tokens, width), v.grid, v.merge)  # (n, num_tokens, m²·Wv)
        h = h.reshape(n * v.num_tokens, v.token_width).to(self.projector.dtype)
        return torch.addmm(self.projector_b, h, self.projector).view(n, v.num_tokens, -1)

    def embed_language(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) -> (B, L, W_vlm) scaled by sqrt(W_vlm), as PaliGemma embeds its prompt."""
        lang = F.embedding(tokens, self.embed)
        return lang * math.sqrt(lang.shape[-1])

    def rope_tables(self, pos: torch.Tensor, theta: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """pos (B, L) int -> cos, sin (B, L, (nh + nkv)·hd) fp32 over the [q | k] columns, head by head
        (`rope_cos_sin`'s numbers), the sin with rotate_half's sign in its first half: RoPE(x) =
        x·cos + x[..., swap_halves]·sin. theta: the backbone's unless given."""
        lay = self.layout
        theta = self.config.vlm.rope_theta if theta is None else theta
        inv_freq = 1.0 / (
            theta ** (torch.arange(0, lay.hd, 2, dtype=torch.float32, device=pos.device) / lay.hd)
        )
        freqs = pos.float()[..., None] * inv_freq  # (B, L, hd/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (B, L, hd)
        sin = emb.sin()
        sin = torch.cat([-sin[..., : lay.hd // 2], sin[..., lay.hd // 2 :]], dim=-1)
        reps = lay.nh + lay.nkv
        return emb.cos().repeat(1, 1, reps), sin.repeat(1, 1, reps)

    def prefix_inputs(
        self, images: torch.Tensor, image_masks: torch.Tensor, tokens: torch.Tensor, token_masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, n, 3, H, W), image_masks (B, n), tokens / token_masks (B, L) -> the backbone's input
        (B, P, W_vlm) in the compute dtype and its validity (B, P), P = n·N + L."""
        b, n = images.shape[:2]
        pixels = images.transpose(0, 1).reshape(n * b, *images.shape[2:])  # camera-major, one SigLIP batch
        vis = self.vision(pixels)  # (n·B, N, W)
        patches = vis.shape[1]
        vis = vis.reshape(n, b, patches, -1).transpose(0, 1).reshape(b, n * patches, -1)
        x = torch.cat([vis.to(self.compute_dtype), self.embed_language(tokens).to(self.compute_dtype)], dim=1)
        valid = torch.cat([image_masks.repeat_interleave(patches, dim=1), token_masks], dim=1)
        return x, valid

    def prefix_kv(
        self, x: torch.Tensor, valid: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The backbone over the prefix x (B, P, W), valid (B, P) -> per layer post-RoPE keys and values
        (B, nkv, P, hd). A padding token attends over the valid keys (valid tokens see what the reference's
        mask gives them; padding rows never reach the actions, and no row is ever fully masked)."""
        bias = key_bias(valid, self.compute_dtype)  # (B, 1, 1, P)
        cos, sin = (t.to(x.dtype) for t in self.rope_tables(valid.long().cumsum(dim=1) - 1))
        keys, values = [], []
        for i, layer in enumerate(self.vlm):

            def attend(q, k, v, keys=keys, values=values):  # noqa: ANN001
                keys.append(k)
                values.append(v)
                return None if q is None else attention(q, k, v, bias)

            x = self.layer_step(
                layer, x, cos, sin, attend, eps=self.config.vlm.rms_eps, kv_only=i == len(self.vlm) - 1
            )
        return keys, values

    def suffix_geometry(self, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prefix validity (B, P) -> the suffix's attention bias (B, 1, S, P + S) (valid prefix keys and the
        suffix blocks: π0 [state | actions], π0.5 [actions]; a block sees earlier blocks and itself) and its
        RoPE tables (B, S, (nh + nkv)·hd), positions continuing after the valid prefix tokens."""
        c = self.config
        b, s = valid.shape[0], c.suffix_len
        n_first = s - c.chunk_size + 1  # tokens up to and including the first action token
        blocks = torch.tensor([*range(n_first), *[n_first - 1] * (c.chunk_size - 1)], device=valid.device)
        suffix_ok = (blocks[None, :] <= blocks[:, None])[None].expand(b, s, s)  # (B, S, S) query x key
        ok = torch.cat([valid[:, None, :].expand(b, s, -1), suffix_ok], dim=2)  # (B, S, P + S)
        pos = valid.long().sum(-1, keepdim=True) + torch.arange(s, device=valid.device)[None]  # (B, S)
        cos, sin = self.rope_tables(pos, c.expert.rope_theta)
        dtype = self.compute_dtype
        return _bias(ok, dtype)[:, None], cos.to(dtype), sin.to(dtype)

    def suffix_tokens(
        self, x_t: torch.Tensor, cond: Conditioning, state_tok: torch.Tensor | None
    ) -> torch.Tensor:
        """x_t (B, chunk, A) fp32 -> the expert's input (B, S, W) in the compute dtype."""
        if self.config.variant == "pi0":
            h = F.silu(torch.matmul(x_t, self.act_in) + cond.time_proj[:, None])  # (B, chunk, W)
            act = torch.matmul(h, self.mlp_out) + self.mlp_out_b
            x = torch.cat([state_tok[:, None].expand(act.shape[0], 1, -1), act], dim=1)
        else:
            x = torch.matmul(x_t, self.act_in) + self.act_in_b
        return x.to(self.compute_dtype)

    def velocity(
        self,
        x_t: torch.Tensor,
        cond: Conditioning,
        state_tok: torch.Tensor | None,
        prefix_keys: list[torch.Tensor],
        prefix_values: list[torch.Tensor],
        geometry: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """One Euler step's velocity: x_t (B, chunk, A) fp32, cond for this t (rows: 1 or B), π0's state token
        (B, W), the cached prefix keys / values per layer (B, nkv, P, hd), `suffix_geometry` -> (B, chunk, A)."""
        c = self.config
        bias, cos, sin = geometry
        bias = head_rows(bias, self.layout.nh, self.layout.nkv)
        x = self.suffix_tokens(x_t, cond, state_tok)
        mods = cond.mods
        for i, layer in enumerate(self.expert):

            def attend(q, k, v, i=i):  # noqa: ANN001
                keys = torch.cat([prefix_keys[i], k], dim=2)
                return attention(q, keys, torch.cat([prefix_values[i], v], dim=2), bias)

            layer_mods = None if mods is None else (mods[:, 2 * i, :, None], mods[:, 2 * i + 1, :, None])
            x = self.layer_step(layer, x, cos, sin, attend, eps=c.expert.rms_eps, mods=layer_mods)
        h = x[:, -c.chunk_size :]
        if mods is None:
            h = rms(h, c.expert.rms_eps, self.final_norm)
        else:
            final = mods[:, -1, :, None]  # (N, 3, 1, W)
            h = rms(h, c.expert.rms_eps, final[:, 0], final[:, 1])
        return torch.matmul(h.float(), self.out_w) + self.out_b

    def layer_step(self, layer, x, cos, sin, attend, *, eps: float, mods=None, kv_only: bool = False):  # noqa: ANN001
        """One folded Gemma layer over x (B, L, W). `attend(q, k, v)` gets post-RoPE q (B, L, nh·hd) (None for a
        K/V-only layer), k and v (B, nkv, L, hd), and returns (B, L, nh·hd) (None when q is None).
        mods: π0.5's ((N, 3, 1, W) attention, (N, 3, 1, W) MLP) adaRMS [1 + scale, shift, gate], else None."""
        lay = self.layout
        b, length = x.shape[:2]
        h = rms(x, eps, layer.in_norm) if mods is None else rms(x, eps, mods[0][:, 0], mods[0][:, 1])
        qkv = torch.matmul(h, layer.qkv)  # (B, L, C)
        if kv_only:  # [k | v]
            k, v = qkv.split(lay.kv, dim=-1)
            k = k * cos[..., lay.q :] + _swap_halves(k, lay.hd) * sin[..., lay.q :]
            attend(None, _heads(k, b, length, lay.nkv), _heads(v, b, length, lay.nkv))
            return x
        qk, v = qkv.split([lay.qk, lay.kv], dim=-1)
        q, k = (qk * cos + _swap_halves(qk, lay.hd) * sin).split([lay.q, lay.kv], dim=-1)  # RoPE'd
        a = attend(q, _heads(k, b, length, lay.nkv), _heads(v, b, length, lay.nkv))  # (B, L, nh·hd)
        y = torch.matmul(a, layer.o)
        x = x + (y if mods is None else y * mods[0][:, 2])
        h = rms(x, eps, layer.post_norm) if mods is None else rms(x, eps, mods[1][:, 0], mods[1][:, 1])
        gate, up = torch.matmul(h, layer.gate_up).chunk(2, dim=-1)
        y = torch.matmul(F.gelu(gate, approximate="tanh") * up, layer.down)
        return x + (y if mods is None else y * mods[1][:, 2])


MASK_VALUE = -65504.0  # finite in fp16; exp(MASK_VALUE + logit) == 0 in fp32


def _bias(ok: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    zero = torch.zeros((), dtype=dtype, device=ok.device)
    return torch.where(ok, zero, torch.full((), MASK_VALUE, dtype=dtype, device=ok.device))


def key_bias(valid: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, P) valid keys -> (B, 1, 1, P) additive bias for every query."""
    return _bias(valid, dtype)[:, None, None, :]


def _swap_halves(x: torch.Tensor, hd: int) -> torch.Tensor:
    """(..., n·hd) -> the two halves of every head swapped: [x2, x1] per head."""
    heads = x.unflatten(-1, (-1, 2, hd // 2))
    return heads.flip(-2).flatten(-3)


def _heads(x: torch.Tensor, b: int, length: int, n: int) -> torch.Tensor:
    """(B, L, n·hd) -> (B, n, L, hd) (a reshape, no transpose, for one head)."""
    if n == 1:
        return x.reshape(b, 1, length, -1)
    return x.reshape(b, length, n, -1).transpose(1, 2)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Folded attention (softmax scale already in q): q (B, Lq, nh·hd) token-major; k, v (B, nkv, Lk, hd);
    additive bias broadcastable to (B, 1, Lq, Lk) -> (B, Lq, nh·hd).

    In an ONNX export it is written out (matmul, fp32 softmax, matmul) with the g = nh / nkv query heads of one
    KV head folded into its query length, so both matmuls are plain batched matmuls and no fp16 logit meets
    the softmax. With one KV head (every Gemma here) the token-major q already is that layout: no transpose,
    and the bias is one row per (query, head), `head_rows`. Otherwise SDPA."""
    b, lq = q.shape[:2]
    nkv, hd = k.shape[1], k.shape[3]
    nh = q.shape[2] // hd
    if not torch.onnx.is_in_onnx_export():
        q = q.view(b, lq, nh, hd).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), scale=1.0, enable_gqa=nkv != nh
        )
        return out.transpose(1, 2).reshape(b, lq, nh * hd)
    if nkv == 1:
        logits = torch.matmul(q.reshape(b, 1, lq * nh, hd), k.transpose(-1, -2)).float()  # (B, 1, Lq·nh, Lk)
        probs = torch.softmax(logits + bias.float(), dim=-1).to(v.dtype)
        return torch.matmul(probs, v).reshape(b, lq, nh * hd)
    g = nh // nkv
    q = q.reshape(b, lq, nh, hd).transpose(1, 2).reshape(b, nkv, g * lq, hd)
    logits = torch.matmul(q, k.transpose(-1, -2)).float().reshape(b, nh, lq, -1)  # (B, nh, Lq, Lk)
    probs = torch.softmax(logits + bias.float(), dim=-1).to(v.dtype).reshape(b, nkv, g * lq, -1)
    return torch.matmul(probs, v).reshape(b, nh, lq, hd).transpose(1, 2).reshape(b, lq, nh * hd)


def head_rows(bias: torch.Tensor, num_heads: int, num_kv_heads: int) -> torch.Tensor:
    """A per-query bias (B, 1, Lq, Lk) as `attention` reads it in an ONNX export with one KV head: one row per
    (query, head), (B, 1, Lq·nh, Lk); unchanged otherwise (or when it is the same for every query)."""
    if not torch.onnx.is_in_onnx_export() or num_kv_heads != 1 or bias.shape[2] == 1:
        return bias
    return bias.repeat_interleave(num_heads, dim=2)


def rms(
    x: torch.Tensor, eps: float, weight: torch.Tensor | None = None, shift: torch.Tensor | None = None
) -> torch.Tensor:
    """x / RMS(x) over the last dim (times `weight`, plus `shift`, both fp32) computed in fp32 and cast back
    to x's dtype: Gemma's norm with its (1 + w) folded away, or adaRMS with 1 + scale as the weight."""
    if torch.onnx.is_in_onnx_export():
        # the pattern onnxruntime fuses into one SimplifiedLayerNormalization: the scale is needed to match it
        xf = x.float()
        y = (
            xf
            * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
            * torch.ones(x.shape[-1], device=x.device)
        )
        y = y if weight is None else y * weight
        return (y if shift is None else y + shift).to(x.dtype)
    if weight is not None and weight.dim() > 1:  # per-row weights (a batch of t): broadcast after the RMS
        y = F.rms_norm(x.float(), (x.shape[-1],), None, eps) * weight
    elif x.dtype == torch.float32 and shift is None:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    else:
        y = F.rms_norm(x.float(), (x.shape[-1],), weight, eps)
    return (y if shift is None else y + shift).to(x.dtype)
