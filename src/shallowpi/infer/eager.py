"""The inference engine's eager fast path: the folded weights (`shallowpi.infer.fold`) run over static buffers.

At batch 1 and small widths a call's time is the number of operators it issues, not their arithmetic. So:
- Every projection writes into a preallocated tensor (`out=` / in-place), and every view the loop needs
  (heads, cache slices and their transposes, rows of the residual stream) is made once per prefix length.
- One expert layer is about 20 operators (the model's modules: about 70): RMS (4 on CPU), one q/k/v matmul,
  RoPE as one half-swap gather over [q | k] and two elementwise ops each on q and k (k's second writes
  straight into the KV cache), the V copy, attention, the o-projection added into the residual in place
  (`addmm_`), RMS, one gate-up matmul, GELU, its product with up, and the down-projection added in place.
  π0.5 adds one gate multiply per branch; its adaRMS scale is the norm's weight and its shift a per-step
  bias of the projection (shift @ W, cached per time grid with everything else t decides).
- bf16 / fp16 (`round_like_model`): norms keep their weights (no fold), the shift stays an fp32 addend, and
  the residual adds, gates and RoPE take one operator each where the model's modules round: the engine's
  bf16 actions stay within 0.01 of the model's own bf16 actions on the bundled teacher (folding all of it
  gave 0.10, as far from them as bf16 is from fp32).
- π0's state token attends only to the prefix and itself, and neither it nor its input depend on t or x_t
  (π0 conditions on t through the action tokens only). Its keys and values at every layer are therefore the
  same at every Euler step: they are computed once per call, with the prefix, and each step runs the expert
  over the action tokens alone. Then every query of a step sees every key that is valid, so the only mask
  left is the prefix's key validity (none at all for an all-valid batch-1 prefix).
- Attention with one KV head (every Gemma config) and small sizes is written out on CPU (two batched matmuls
  and a softmax, the query heads folded into the query length, 3-4 operators) instead of SDPA, whose fixed
  cost dominates there; SDPA elsewhere (bigger attention, CUDA, bf16).
- RMS on CPU in fp32 is `vector_norm` + `addcmul` + `rsqrt_` + `mul` into static tensors (`F.rms_norm` is a
  slower composite of the same ops on CPU); elsewhere `F.rms_norm` (a fused kernel on CUDA).

Shapes: a "group" is a set of rows that writes its K/V into one slice of the cache and attends to the cache
up to its end: the prefix [0, P), π0's state token [P, P + 1), the action tokens [P + S - chunk, P + S).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from shallowpi.infer.fold import FoldedPi, HeadLayout, rms
from shallowpi.model.attention import MASK_VALUE


class StepMods(NamedTuple):
    """One expert layer's per-step constants (π0.5): adaRMS 1 + scale (the RMS weight, fp32), the shift as an
    fp32 addend after the RMS or (fp32 engine) folded into the next projection's bias, and the branch gates.
    A plain-RMSNorm layer: the norm weights (None when folded into the projections), nothing else."""

    attn_scale: torch.Tensor | None
    attn_shift: torch.Tensor | None
    qkv_bias: torch.Tensor | None
    attn_gate: torch.Tensor | None
    mlp_scale: torch.Tensor | None
    mlp_shift: torch.Tensor | None
    gate_up_bias: torch.Tensor | None
    mlp_gate: torch.Tensor | None


MANUAL_ATTENTION_MAX = 1 << 17
SIGMOID_GELU_MIN = 1 << 14  # gate elements from which the 4-pass GELU beats torch's kernel on CPU
GELU_C1 = 2 * (2 / math.pi) ** 0.5
GELU_C2 = GELU_C1 * 0.044715  # (query rows x heads x keys) up to which CPU attention is written out


class _Group:
    """Static workspace of one group of rows (B·L rows) and its views of the KV cache of one prefix length."""

    def __init__(
        self, run: FoldedRun, keys, values, start: int, length: int, width: int, mlp_dim: int, eps: float
    ) -> None:
        lay, b, dtype, dev = run.layout, run.batch, run.dtype, run.device
        rows, end = b * length, start + length
        z = lambda *shape: torch.zeros(*shape, dtype=dtype, device=dev)  # noqa: E731
        self.rows, self.length = rows, length
        self.qkv = z(rows, lay.cols)  # [q | k | v]
        self.qk_raw, v_raw = self.qkv.split([lay.qk, lay.kv], dim=1)
        self.swapped = z(rows, lay.qk)  # [q | k] with the halves of every head swapped (RoPE's rotate_half)
        four = lambda t: t.view(b, length, lay.nkv, lay.hd)  # noqa: E731  (B, L, nkv, hd)
        self.q_raw, k_raw = self.qk_raw.split([lay.q, lay.kv], dim=1)
        self.q_rot, k_rot = self.swapped.split([lay.q, lay.kv], dim=1)
        self.k_raw, self.k_rot, self.v_raw = four(k_raw), four(k_rot), four(v_raw)
        self.q = z(
            rows, lay.q
        )  # RoPE'd queries, contiguous: rows (token, head) for the written-out attention
        self.k_tmp = z(b, length, lay.nkv, lay.hd)
        self.cos_q, self.sin_q = z(rows, lay.q), z(rows, lay.q)  # RoPE tables, filled per call
        self.cos_k, self.sin_k = z(b, length, lay.nkv, lay.hd), z(b, length, lay.nkv, lay.hd)
        self.attn = z(rows, lay.q)
        self.gu = z(rows, 2 * mlp_dim)
        self.gate, self.up = self.gu.split(mlp_dim, dim=1)
        self.act = z(rows, mlp_dim) if run.fast_norm and rows * mlp_dim >= SIGMOID_GELU_MIN else None
        self.tmp = z(rows, width)
        self.norm = _Norm(rows, width, eps, run.device) if run.fast_norm else None
        self.eps = eps
        # the cache: where this group writes (B, L, nkv, hd) and what it reads ([0, end))
        self.k_out = [k[:, :, start:end].transpose(1, 2) for k in keys]
        self.v_out = [v[:, :, start:end].transpose(1, 2) for v in values]
        self.manual = run.manual_attention and length * lay.nh * end <= MANUAL_ATTENTION_MAX
        if self.manual:  # one KV head: (B, L·nh, hd) queries against (B, end, hd) keys
            self.q_rows = self.q.view(b, length * lay.nh, lay.hd)
            self.attn_rows = self.attn.view(b, length * lay.nh, lay.hd)
            self.keys_t = [k[:, 0, :end].transpose(1, 2) for k in keys]  # (B, hd, end)
            self.values = [v[:, 0, :end] for v in values]  # (B, end, hd)
        else:
            self.q_heads = self.q.view(b, length, lay.nh, lay.hd).transpose(1, 2)  # (B, nh, L, hd)
            self.keys = [k[:, :, :end] for k in keys]
            self.values = [v[:, :, :end] for v in values]
        self.end = end

    def set_rope(self, cos: torch.Tensor, sin: torch.Tensor, q: int) -> None:
        """cos / sin (B, L, (nh + nkv)·hd) over the [q | k] columns -> this group's static tables."""
        self.cos_q.copy_(cos[..., :q].reshape(self.cos_q.shape))
        self.sin_q.copy_(sin[..., :q].reshape(self.sin_q.shape))
        self.cos_k.copy_(cos[..., q:].reshape(self.cos_k.shape))
        self.sin_k.copy_(sin[..., q:].reshape(self.sin_k.shape))


class _Norm:
    """RMS over the last dim of (rows, W) fp32 on CPU, into static tensors (4 operators, 5 with a weight)."""

    def __init__(self, rows: int, width: int, eps: float, device) -> None:
        self.eps = torch.tensor(eps, device=device)
        self.n = torch.zeros(rows, 1, device=device)
        self.r = torch.zeros(rows, 1, device=device)
        self.h = torch.zeros(rows, width, device=device)
        self.inv_width = 1.0 / width

    def __call__(self, x: torch.Tensor, weight: torch.Tensor | None, shift: torch.Tensor | None = None):
        torch.linalg.vector_norm(x, dim=-1, keepdim=True, out=self.n)  # sqrt(sum x^2)
        torch.addcmul(
            self.eps, self.n, self.n, value=self.inv_width, out=self.r
        ).rsqrt_()  # 1 / sqrt(mean + eps)
        torch.mul(x, self.r, out=self.h)
        if shift is not None:  # adaRMS: shift + rms(x)·(1 + scale)
            return torch.addcmul(shift, self.h, weight, out=self.h)
        return self.h if weight is None else self.h.mul_(weight)


class _Views:
    """Everything static that depends on the prefix length P: the groups, the key-validity bias."""

    def __init__(self, run: FoldedRun, keys, values, prefix_len: int) -> None:
        c = run.config
        b, s, chunk = run.batch, c.suffix_len, c.chunk_size
        self.bias = torch.zeros(b, 1, prefix_len + s, dtype=run.dtype, device=run.device)  # keys: 0 or -inf
        vlm, ex = (
            (c.vlm.width, c.vlm.mlp_dim, c.vlm.rms_eps),
            (c.expert.width, c.expert.mlp_dim, c.expert.rms_eps),
        )
        self.prefix = _Group(run, keys, values, 0, prefix_len, *vlm)
        self.state = _Group(run, keys, values, prefix_len, 1, *ex) if run.pi0 else None
        self.actions = _Group(run, keys, values, prefix_len + s - chunk, chunk, *ex)
        for g in (self.prefix, self.state, self.actions):
            if g is not None:
                g.bias = self.bias[..., : g.end]  # (B, 1, end): the same for every query row
                g.bias_heads = g.bias[:, :, None]  # (B, 1, 1, end) for SDPA


class FoldedRun:
    """The eager fast path of one engine: static workspaces, prefill (+ π0's state token) and the Euler loop."""

    def __init__(self, folded: FoldedPi, batch: int, device: torch.device) -> None:
        c = folded.config
        self.folded, self.config, self.batch, self.device = folded, c, batch, device
        self.layout: HeadLayout = folded.layout
        self.swap = folded.layout.swap_halves(device)
        self.dtype = folded.compute_dtype
        self.pi0 = c.variant == "pi0"
        cpu32 = device.type == "cpu" and self.dtype == torch.float32
        self.fast_norm = cpu32
        # bf16 / fp16: the residual adds, gates and RoPE round where the model's modules round (one op each),
        # so that the engine's actions stay as close to the model's bf16 actions as rounding allows
        self.round_like_model = self.dtype != torch.float32
        # π0.5's adaRMS shift: a per-step bias of the next projection (shift @ W) on CUDA in fp32; on CPU an
        # addend after the RMS (the same operator count, and no bias broadcast into every GEMM output)
        self.shift_as_bias = device.type == "cuda" and not self.round_like_model
        self.gelu_c1 = torch.tensor(GELU_C1, device=device)
        self.manual_attention = cpu32 and self.layout.nkv == 1
        rows, w = batch * c.chunk_size, c.expert.width
        self.x = torch.zeros(rows, c.max_action_dim, device=device)  # the Euler iterate, fp32
        self.res = torch.zeros(rows, w, dtype=self.dtype, device=device)  # the action tokens' residual stream
        self.hidden = torch.zeros(rows, w, device=device)  # π0's action-time MLP, fp32
        self.state_tok = torch.zeros(batch, w, device=device) if self.pi0 else None

    def views(self, keys, values, prefix_len: int) -> _Views:
        return _Views(self, keys, values, prefix_len)

    # one layer ---------------------------------------------------------------------------------------------
    def _rms(self, g: _Group, x, weight=None, shift=None) -> torch.Tensor:
        if g.norm is not None:
            return g.norm(x, weight, shift)
        return rms(x, g.eps, weight, shift)

    def layer(self, g: _Group, i: int, layer, x: torch.Tensor, mods=None, *, use_bias: bool, kv_only=False):
        """One folded Gemma layer over the group's rows; x (rows, W) is updated in place. `mods`: π0.5's
        `StepMods` of this layer and step (None: a plain-RMSNorm layer)."""
        m = mods or StepMods(layer.in_norm, None, None, None, layer.post_norm, None, None, None)
        h = self._rms(g, x, m.attn_scale, m.attn_shift)
        if m.qkv_bias is None:
            torch.mm(h, layer.qkv, out=g.qkv)
        else:
            torch.addmm(m.qkv_bias, h, layer.qkv, out=g.qkv)
        torch.index_select(g.qk_raw, 1, self.swap, out=g.swapped)
        torch.mul(g.k_raw, g.cos_k, out=g.k_tmp)
        self._rope_add(g.k_tmp, g.k_rot, g.sin_k, g.k_out[i])  # RoPE'd keys straight into the cache
        g.v_out[i].copy_(g.v_raw)
        if kv_only:
            return
        torch.mul(g.q_raw, g.cos_q, out=g.q)
        self._rope_add(g.q, g.q_rot, g.sin_q, g.q)
        a = self._attend(g, i, use_bias)
        self._residual(x, a, layer.o, m.attn_gate, g.tmp)
        h = self._rms(g, x, m.mlp_scale, m.mlp_shift)
        if m.gate_up_bias is None:
            torch.mm(h, layer.gate_up, out=g.gu)
        else:
            torch.addmm(m.gate_up_bias, h, layer.gate_up, out=g.gu)
        act = self._gelu(g).mul_(g.up)
        self._residual(x, act, layer.down, m.mlp_gate, g.tmp)

    def _gelu(self, g: _Group) -> torch.Tensor:
        """GELU (tanh approximation) of the gate. On CPU in fp32 and past small sizes as x·sigmoid(2u) with
        u = sqrt(2/π)(x + 0.044715 x³), the same function (0.5(1 + tanh u) = sigmoid(2u)) in four fast
        passes into a static tensor: torch's tanh-GELU kernel is 1.5-1.9x slower on this CPU."""
        if g.act is None:
            return F.gelu(g.gate, approximate="tanh")
        torch.addcmul(self.gelu_c1, g.gate, g.gate, value=GELU_C2, out=g.act)  # 2·sqrt(2/π)(1 + 0.044715 x²)
        return g.act.mul_(g.gate).sigmoid_().mul_(g.gate)

    def _rope_add(self, base: torch.Tensor, rot: torch.Tensor, sin: torch.Tensor, out: torch.Tensor) -> None:
        """out <- base + rot·sin (base = x·cos)."""
        if self.round_like_model:  # bf16: (x·cos) + (rot·sin), each rounded, as the model's apply_rope
            torch.add(base, rot * sin, out=out)
        else:
            torch.addcmul(base, rot, sin, out=out)

    def _residual(self, x: torch.Tensor, a: torch.Tensor, w: torch.Tensor, gate, tmp: torch.Tensor) -> None:
        """x <- x + (a @ w)[·gate], in place."""
        if gate is None and not self.round_like_model:
            x.addmm_(a, w)
        elif gate is None:
            x.add_(torch.mm(a, w, out=tmp))
        elif not self.round_like_model:
            x.addcmul_(torch.mm(a, w, out=tmp), gate)
        else:
            x.add_(torch.mm(a, w, out=tmp).mul_(gate))

    def _attend(self, g: _Group, i: int, use_bias: bool) -> torch.Tensor:
        """The group's queries against the cache [0, end) -> (rows, nh·hd) (softmax scale folded into q)."""
        if g.manual:
            if use_bias:
                logits = torch.baddbmm(g.bias, g.q_rows, g.keys_t[i])
            else:
                logits = torch.bmm(g.q_rows, g.keys_t[i])
            torch.bmm(torch.softmax(logits, dim=-1), g.values[i], out=g.attn_rows)
            return g.attn
        lay = self.layout
        out = F.scaled_dot_product_attention(
            g.q_heads,
            g.keys[i],
            g.values[i],
            attn_mask=g.bias_heads if use_bias else None,
            scale=1.0,
            enable_gqa=lay.nkv != lay.nh,
        )
        return out.transpose(1, 2).reshape(g.rows, lay.q)

    # stages ------------------------------------------------------------------------------------------------
    def prefill(self, v: _Views, embs: torch.Tensor, valid: torch.Tensor, use_bias: bool) -> None:
        """The backbone over the prefix embs (B, P, W) into the cache [0, P), then π0's state token [P, P + 1)."""
        f, lay, g = self.folded, self.layout, v.prefix
        b, p = embs.shape[:2]
        cos, sin = (t.to(self.dtype) for t in f.rope_tables(valid.long().cumsum(dim=1) - 1))
        g.set_rope(cos, sin, lay.q)
        x = embs.reshape(b * p, -1)  # the residual stream, updated in place
        last = len(f.vlm) - 1
        for i, layer in enumerate(f.vlm):
            if i == last:  # its weights are [k | v] only
                kv = torch.mm(self._rms(g, x, layer.in_norm), layer.qkv)
                k, val = kv.view(b, p, 2 * lay.nkv, lay.hd).split(lay.nkv, dim=2)
                k_rot = torch.cat([k[..., lay.hd // 2 :], k[..., : lay.hd // 2]], dim=-1)
                self._rope_add(k * g.cos_k, k_rot, g.sin_k, g.k_out[i])
                g.v_out[i].copy_(val)
                break
            self.layer(g, i, layer, x, use_bias=use_bias)
        if self.pi0:  # the state token: the same keys and values at every Euler step
            st = v.state
            x = self.state_tok.to(self.dtype, copy=True)  # its residual stream, updated in place
            for i, layer in enumerate(f.expert):
                self.layer(st, i, layer, x, use_bias=use_bias, kv_only=i == last)

    def denoise(self, v: _Views, cond, noise: torch.Tensor, use_bias: bool) -> torch.Tensor:
        """x_{t+dt} = x_t + dt·v(x_t, t) from t = 1 over the cached prefix; reads only static tensors."""
        f, x = self.folded, self.x
        direct = self.dtype == torch.float32
        x.copy_(noise.view(x.shape))
        for k, dt in enumerate(cond.dts):
            h = self._expert_step(v, cond, k, use_bias)
            x.addmm_(h if direct else h.float(), f.out_w, alpha=dt)
            x.add_(cond.out_bias[k], alpha=dt)
        return x.view(noise.shape)

    def velocity(self, v: _Views, cond, k: int, x_t: torch.Tensor, use_bias: bool) -> torch.Tensor:
        """v(x_t, t_k) (B, chunk, A) fp32 of Euler step k, a new tensor: `denoise`'s step without the update
        (real-time chunking guides the velocity between the two)."""
        f = self.folded
        self.x.copy_(x_t.reshape(self.x.shape))
        h = self._expert_step(v, cond, k, use_bias)
        return torch.addmm(cond.out_bias[k], h.float(), f.out_w).view(x_t.shape)

    def _expert_step(self, v: _Views, cond, k: int, use_bias: bool) -> torch.Tensor:
        """The expert over the action tokens of self.x at step k -> the final norm's output (rows, W)."""
        f, g, x, res = self.folded, v.actions, self.x, self.res
        if self.pi0:  # action tokens: action-time MLP of (x_t, t), the t half cached
            torch.addmm(cond.time_proj[k], x, f.act_in, out=self.hidden)
            F.silu(self.hidden, inplace=True)
            _addmm_into(res, f.mlp_out_b, self.hidden, f.mlp_out, self.dtype == torch.float32)
        else:
            _addmm_into(res, f.act_in_b, x, f.act_in, self.dtype == torch.float32)
        for i, (layer, mods) in enumerate(zip(f.expert, cond.layers[k], strict=True)):
            self.layer(g, i, layer, res, mods, use_bias=use_bias)
        return self._rms(g, res, cond.final_scale[k], cond.final_shift[k])

    def conditioning(self, cond, temb: torch.Tensor) -> None:
        """Every step's folded constants into `cond` (`engine._Conditioning`) from the steps' time embeddings
        temb (steps, W): π0.5's modulations as norm weights, projection biases (shift @ W) and gates; π0's
        time half of the action-time MLP."""
        f, c, dtype = self.folded, self.config, self.dtype
        got = f.conditioning(temb)  # a row per step (every sample of a batch shares t)
        steps = len(cond.times)
        if got.mods is None:  # π0
            cond.time_proj = list(got.time_proj.unbind(0))
            cond.layers = [[None] * c.depth for _ in range(steps)]
            cond.final_scale = [f.final_norm] * steps  # None when folded into action_out_proj
            cond.final_shift = [None] * steps
            cond.out_bias = [f.out_b] * steps
            return
        mods = got.mods  # (steps, 2D + 1, 3, W): [1 + scale, shift, gate]
        scale, shift, gate = mods[:, :, 0], mods[:, :, 1], mods[:, :, 2].to(dtype)  # norm weights stay fp32
        per_layer = []
        for i, layer in enumerate(f.expert):
            a, m = 2 * i, 2 * i + 1
            if not self.shift_as_bias:  # the shift after the RMS, in fp32, as the model adds it
                biases = (shift[:, a], None, shift[:, m], None)
            else:  # the shift as a bias of the projection after the norm: shift @ W
                b_qkv = (shift[:, a] @ layer.qkv.float()).to(dtype)  # (steps, C)
                biases = (None, b_qkv, None, (shift[:, m] @ layer.gate_up.float()).to(dtype))
            per_layer.append(
                (scale[:, a], biases[0], biases[1], gate[:, a], scale[:, m], *biases[2:], gate[:, m])
            )
        at = lambda k: [StepMods(*(None if p is None else p[k] for p in parts)) for parts in per_layer]  # noqa: E731
        cond.layers = [at(k) for k in range(steps)]
        cond.final_scale = list(scale[:, -1].unbind(0))
        if not self.shift_as_bias:
            cond.final_shift = list(shift[:, -1].unbind(0))
            cond.out_bias = [f.out_b] * steps
        else:
            cond.final_shift = [None] * steps
            cond.out_bias = list((f.out_b + shift[:, -1] @ f.out_w).unbind(0))

    def suffix_geometry(self, v: _Views, prefix_valid: torch.Tensor) -> bool:
        """RoPE tables of the state and action tokens and the key-validity bias for this call's prefix,
        written into the static buffers. -> whether any key is invalid."""
        c, lay = self.config, self.layout
        s = c.suffix_len
        pos = prefix_valid.long().sum(-1, keepdim=True) + torch.arange(s, device=self.device)[None]  # (B, S)
        cos, sin = (t.to(self.dtype) for t in self.folded.rope_tables(pos, c.expert.rope_theta))
        v.actions.set_rope(cos[:, s - c.chunk_size :], sin[:, s - c.chunk_size :], lay.q)
        if v.state is not None:
            v.state.set_rope(cos[:, :1], sin[:, :1], lay.q)
        p = prefix_valid.shape[1]
        v.bias[:, 0, :p].copy_(torch.where(prefix_valid, 0.0, MASK_VALUE))
        return not bool(prefix_valid.all())


def _addmm_into(out: torch.Tensor, bias, a, w, direct: bool) -> None:
    """out <- bias + a @ w (fp32 math), straight into `out` when it is fp32."""
    if direct:
        torch.addmm(bias, a, w, out=out)
    else:
        out.copy_(torch.addmm(bias, a, w))
