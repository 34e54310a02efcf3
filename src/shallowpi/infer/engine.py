"""Fast inference runtime: prefix once into a preallocated KV cache, then an expert-only Euler loop.

    engine = InferenceEngine(model, batch_size=1)                  # CPU fp32, eager
    engine = InferenceEngine(model, device="cuda", dtype="bfloat16", compile=True, cuda_graph=True)
    actions = engine.sample_actions(obs, noise=noise)                # obs: a shallowpi.Observation

What it does beyond `PiModel.sample_actions` (whose outputs it equals within 1e-5 in fp32 on CPU):
- The schedule is the model's (`PiConfig.time_grid`: its recorded grid for a step-distilled student, else
  uniform Euler); an explicit `num_steps` overrides it as in `PiModel.sample_actions`.
- Per-call work that depends only on the weights and the time schedule is done once per time grid and
  cached: the sin/cos time embeddings, π0.5's time MLP and every adaRMS modulation (scale, shift, gate) of
  every expert layer and step, π0's time half of `action_time_mlp_in`. Call `refresh()` after changing weights.
- The KV cache is one preallocated (B, nkv, P + S, hd) buffer per layer: the prefix fills [:P] once, each
  Euler step writes its suffix K/V into [P:] in place; no per-step concatenation.
- Kept camera slots go through SigLIP as one batch; the backbone's last layer computes only K and V.
- Attention runs through SDPA (flash kernel on CPU/CUDA); the mask is dropped when every key is valid
  (π0.5 with an all-valid compacted prefix), which is the common batch-1 case.
- Static shapes: buffers for one prefix length are reused across calls. With `cuda_graph=True` the whole
  denoising loop is captured once per prefix length and replayed (language padding is then kept, so the
  prefix length only changes when the set of masked camera slots changes). `compile=True` wraps the loop
  in `torch.compile`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from shallowpi.model.attention import additive, make_att_2d, positions
from shallowpi.model.config import euler_steps
from shallowpi.model.gemma import LayerModulation, Modulation, apply_rope, rope_cos_sin
from shallowpi.model.inputs import check_inputs
from shallowpi.model.pi import PiModel, sincos_time_embedding
from shallowpi.observation import Observation

STAGES = ("vision", "prefix", "denoise")
Marks = Callable[[str], None]  # called with a stage name when that stage's work has been issued


@dataclass
class _Conditioning:
    """Per-time-grid constants of the Euler loop (depend on weights and the t schedule only)."""

    times: list[float]  # t_k at which the velocity is evaluated
    dts: list[float]  # Euler step after each evaluation (negative)
    # π0.5: adaRMS modulations, [step][layer], each tensor (B, 1, W) (views of one (steps, B, 1, W) tensor)
    layer_mods: list[list[LayerModulation]] = field(default_factory=list)
    final_mods: list[Modulation] = field(default_factory=list)  # [step]: the final expert norm's
    time_proj: torch.Tensor | None = None  # π0: time half of action_time_mlp_in + bias, (steps, B, 1, W)


@dataclass
class _Buffers:
    """Static tensors for one prefix length P (shapes never change once allocated)."""

    prefix_len: int
    keys: list[torch.Tensor]  # per layer (B, nkv, P + S, hd): post-RoPE prefix keys, then suffix keys
    values: list[torch.Tensor]  # per layer (B, nkv, P + S, hd)
    mask: torch.Tensor  # (B, 1, S, P + S) additive, compute dtype
    use_mask: bool  # False when every key is valid for every query (SDPA without a mask)
    cos: torch.Tensor  # (B, 1, S, hd)
    sin: torch.Tensor
    noise: torch.Tensor  # (B, chunk, A) fp32, copied in per call
    state: torch.Tensor | None  # π0: (B, max_state_dim) fp32
    out: torch.Tensor | None = None  # result of the captured graph
    graphs: dict = field(default_factory=dict)  # time grid (tuple) -> torch.cuda.CUDAGraph


class InferenceEngine:
    def __init__(
        self,
        model: PiModel,
        batch_size: int = 1,
        device: str | torch.device | None = None,
        dtype: str | None = None,
        *,
        compile: bool = False,
        cuda_graph: bool = False,
        compact: bool = True,
        compile_mode: str | None = None,
        max_cached_shapes: int = 4,
    ) -> None:
        """`model` is used in place (moved to `device`, cast to bf16 if `dtype="bfloat16"`)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = torch.device(device) if device is not None else model.device
        if cuda_graph and device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a CUDA device, got {device}")
        if dtype not in (None, "float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
        model = model.to(device).eval()
        if dtype == "bfloat16" and model.compute_dtype != torch.bfloat16:
            model.to_bfloat16()
        if dtype == "float32" and model.compute_dtype != torch.float32:
            raise ValueError("model is bf16; build it in fp32 to run the engine in fp32")
        self.model, self.config, self.device = model, model.config, device
        self.batch_size = batch_size
        self.compact = compact
        self.cuda_graph = cuda_graph
        # Graph replay needs a fixed prefix length: keep language padding (masked) instead of trimming it.
        self.trim_language = compact and not cuda_graph
        self.max_cached_shapes = max_cached_shapes
        self._cond: dict[int, _Conditioning] = {}
        self._buffers: dict[int, _Buffers] = {}
        self._loop = self._denoise_loop
        if compile:
            mode = compile_mode or ("max-autotune-no-cudagraphs" if cuda_graph else None)
            self._loop = torch.compile(self._denoise_loop, mode=mode, dynamic=False)

    # public API -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_actions(
        self,
        obs: Observation,
        *,
        noise: torch.Tensor | None = None,
        num_steps: int | None = None,
        marks: Marks | None = None,
    ) -> torch.Tensor:
        """Same contract as `PiModel.sample_actions`: -> (B, chunk, max_action_dim) fp32.

        `marks(stage)` is called after each of "vision", "prefix", "denoise" has been issued (bench timing).
        """
        grid = self.config.time_grid(num_steps)  # validates num_steps before any work
        obs = self.check(obs)
        embs, pad = self.encode(obs)
        _mark(marks, "vision")
        buf = self.prefill(embs, pad, obs.state)
        _mark(marks, "prefix")
        actions = self.denoise(buf, noise, len(grid) - 1)
        _mark(marks, "denoise")
        return actions

    def refresh(self) -> None:
        """Forget cached conditioning and graphs (after the model's weights changed)."""
        self._cond.clear()
        self._buffers.clear()

    # stages -----------------------------------------------------------------------------------------------
    def check(self, obs: Observation) -> Observation:
        """The checked observation the stages run on (`check_inputs`: compacted, π0's state padded)."""
        checked = check_inputs(self.config, obs, compact=self.compact)
        if checked.batch_size != self.batch_size:
            raise ValueError(
                f"this engine was built for batch_size={self.batch_size} (static shapes); got tokens of shape "
                f"{tuple(obs.tokens.shape)}"
            )
        if self.compact and not self.trim_language:  # static length for graph replay
            checked = dataclasses.replace(checked, tokens=obs.tokens, token_masks=obs.token_masks)
        return checked

    def encode(self, obs: Observation) -> tuple[torch.Tensor, torch.Tensor]:
        """Vision (all kept slots in one SigLIP batch) + language embedding -> (B, P, W_vlm), pad (B, P)."""
        m, b = self.model, self.batch_size
        n_cam, n_patch = obs.num_slots, self.config.vision.num_patches
        images = obs.images.to(self.device)  # (B, n_cam, 3, H, W)
        pixels = images.transpose(0, 1).reshape(n_cam * b, *images.shape[2:])  # (n_cam * B, 3, H, W)
        vis = m.projector(m.vision(pixels))  # (n_cam * B, N, W_vlm)
        vis = vis.view(n_cam, b, n_patch, -1).transpose(0, 1).reshape(b, n_cam * n_patch, -1)
        cam_pad = obs.image_masks.to(self.device)  # (B, n_cam)
        lang = m.vlm.embed_tokens(obs.tokens.to(self.device))  # (B, L, W_vlm)
        dtype = m.compute_dtype
        embs = torch.cat([vis.to(dtype), (lang * math.sqrt(lang.shape[-1])).to(dtype)], dim=1)
        pad = torch.cat([cam_pad.repeat_interleave(n_patch, dim=1), obs.token_masks.to(self.device)], 1)
        return embs, pad

    def prefill(self, embs: torch.Tensor, pad: torch.Tensor, state: torch.Tensor | None) -> _Buffers:
        """Backbone over the prefix; writes post-RoPE K/V of every layer into the static cache."""
        buf = self._buffers_for(embs.shape[1])
        cfg = self.config.vlm
        all_valid = not self.cuda_graph and bool(pad.all())
        mask = None if all_valid else additive(make_att_2d(pad, torch.zeros_like(pad, dtype=torch.long)))
        cos, sin = rope_cos_sin(positions(pad), cfg.head_dim, cfg.rope_theta)
        p = embs.shape[1]
        x = embs
        layers = self.model.vlm.layers
        for i, layer in enumerate(layers):
            last = i == len(layers) - 1
            # the last layer's queries, attention output and MLP never reach the actions
            q, k, v = layer.qkv(x, queries=not last)  # k, v (B, nkv, P, hd)
            buf.keys[i][:, :, :p].copy_(apply_rope(k, cos, sin))
            buf.values[i][:, :, :p].copy_(v)
            if last:
                break
            q = apply_rope(q, cos, sin)  # (B, nh, P, hd)
            out = _sdpa(q, buf.keys[i][:, :, :p], buf.values[i][:, :, :p], mask)
            x = layer.post_attention(x, out)
        self._suffix_geometry(buf, pad)
        if state is not None:
            buf.state.copy_(state)
        return buf

    def denoise(self, buf: _Buffers, noise: torch.Tensor | None, steps: int | None = None) -> torch.Tensor:
        """Euler loop over `config.time_grid(steps)` (None: the model's own schedule)."""
        grid = tuple(self.config.time_grid(steps))
        b, c = self.batch_size, self.config
        shape = (b, c.chunk_size, c.max_action_dim)
        if noise is None:
            noise = torch.randn(shape, device=self.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise: expected shape {shape}, got {tuple(noise.shape)}")
        buf.noise.copy_(noise)
        cond = self._conditioning(grid)
        if not self.cuda_graph:
            return self._loop(buf, cond)
        if grid not in buf.graphs:
            buf.graphs[grid] = self._capture(buf, cond)
        buf.graphs[grid].replay()
        return buf.out.clone()

    # the Euler loop ---------------------------------------------------------------------------------------
    def _denoise_loop(self, buf: _Buffers, cond: _Conditioning) -> torch.Tensor:
        """x_{t+dt} = x_t + dt·v(x_t, t) from t = 1 over the cached prefix; reads only static tensors."""
        x = buf.noise
        state_tok = None
        if self.config.variant == "pi0":
            state_tok = self.model.state_proj(buf.state)[:, None]  # (B, 1, W): the same at every step
        for k, dt in enumerate(cond.dts):
            x = x + dt * self._velocity(buf, cond, k, x, state_tok)
        return x

    def _velocity(self, buf, cond, k, x_t, state_tok) -> torch.Tensor:
        m = self.model
        p = buf.prefix_len
        act = m.action_in_proj(x_t)  # (B, chunk, W)
        if state_tok is not None:  # π0: time half of action_time_mlp_in is precomputed
            w_act = m.action_time_mlp_in.weight[:, : act.shape[-1]]
            h = F.silu(F.linear(act, w_act) + cond.time_proj[k])
            h = torch.cat([state_tok, m.action_time_mlp_out(h)], dim=1)  # (B, S, W)
        else:
            h = act
        h = h.to(m.compute_dtype)
        mods = cond.layer_mods[k] if cond.layer_mods else None
        for i, layer in enumerate(m.expert.layers):
            mod = mods[i] if mods else None
            q, key, v = layer.qkv(h, mod)  # (B, nh, S, hd), (B, nkv, S, hd) x 2
            q = apply_rope(q, buf.cos, buf.sin)
            buf.keys[i][:, :, p:].copy_(apply_rope(key, buf.cos, buf.sin))
            buf.values[i][:, :, p:].copy_(v)
            out = _sdpa(q, buf.keys[i], buf.values[i], buf.mask if buf.use_mask else None)
            h = layer.post_attention(h, out, mod)
        return m.action_head(h, cond.final_mods[k] if cond.final_mods else None)

    # caches -----------------------------------------------------------------------------------------------
    def _conditioning(self, grid: tuple[float, ...] | int | None) -> _Conditioning:
        """Constants for one time grid (a step count or None means `config.time_grid(that)`)."""
        if grid is None or isinstance(grid, int):
            grid = tuple(self.config.time_grid(grid))
        if grid in self._cond:
            return self._cond[grid]
        m, c, b = self.model, self.config, self.batch_size
        schedule = euler_steps(grid)  # same floats as PiModel.integrate
        times, dts = [t for t, _ in schedule], [dt for _, dt in schedule]
        steps = len(times)
        t = torch.tensor(times, dtype=torch.float32, device=self.device).repeat_interleave(b)  # (steps*B,)
        w = c.expert.width
        temb = sincos_time_embedding(t, w, c.min_period, c.max_period).to(m.action_in_proj.weight.dtype)
        cond = _Conditioning(times, dts)
        if c.uses_adarms:
            tc = F.silu(m.time_mlp_out(F.silu(m.time_mlp_in(temb))))  # (steps*B, W)

            def per_step(mod: Modulation) -> list[Modulation]:  # (steps*B, 1, W) each -> [step] of (B, 1, W)
                parts = [part.view(steps, b, 1, w) for part in mod]
                return [Modulation(*(part[k] for part in parts)) for k in range(steps)]

            layers = [
                [per_step(mod) for mod in layer.modulation(tc, m.compute_dtype)] for layer in m.expert.layers
            ]
            cond.layer_mods = [[LayerModulation(a[k], p[k]) for a, p in layers] for k in range(steps)]
            cond.final_mods = per_step(m.expert.norm.modulation(tc, m.compute_dtype))
        else:
            w_time = m.action_time_mlp_in.weight[:, w:]  # (W, W): acts on the time embedding
            cond.time_proj = F.linear(temb, w_time, m.action_time_mlp_in.bias).view(steps, b, 1, w)
        self._cond[grid] = cond
        return cond

    def _buffers_for(self, prefix_len: int) -> _Buffers:
        if prefix_len in self._buffers:
            return self._buffers[prefix_len]
        if len(self._buffers) >= self.max_cached_shapes:
            self._buffers.pop(next(iter(self._buffers)))  # oldest shape goes (and its graphs)
        c, b, dev, dtype = self.config, self.batch_size, self.device, self.model.compute_dtype
        s, cfg = c.suffix_len, c.expert
        kv_shape = (b, cfg.num_kv_heads, prefix_len + s, cfg.head_dim)
        buf = _Buffers(
            prefix_len=prefix_len,
            keys=[torch.zeros(kv_shape, dtype=dtype, device=dev) for _ in range(c.depth)],
            values=[torch.zeros(kv_shape, dtype=dtype, device=dev) for _ in range(c.depth)],
            mask=torch.zeros(b, 1, s, prefix_len + s, dtype=dtype, device=dev),
            use_mask=True,
            cos=torch.zeros(b, 1, s, cfg.head_dim, device=dev),
            sin=torch.zeros(b, 1, s, cfg.head_dim, device=dev),
            noise=torch.zeros(b, c.chunk_size, c.max_action_dim, device=dev),
            state=torch.zeros(b, c.max_state_dim, device=dev) if c.variant == "pi0" else None,
        )
        self._buffers[prefix_len] = buf
        return buf

    def _suffix_geometry(self, buf: _Buffers, prefix_pad: torch.Tensor) -> None:
        """Suffix RoPE and mask for this call's prefix validity, written into the static buffers."""
        b, s = self.batch_size, self.config.suffix_len
        suffix_pad = torch.ones(b, s, dtype=torch.bool, device=self.device)
        ar = [1] * (s - self.config.chunk_size + 1) + [0] * (self.config.chunk_size - 1)
        suffix_ar = torch.tensor(ar, dtype=torch.long, device=self.device).expand(b, -1)
        (cos, sin), mask = self.model.suffix_rope_and_mask(prefix_pad, suffix_pad, suffix_ar)
        buf.cos.copy_(cos)
        buf.sin.copy_(sin)
        buf.mask.copy_(mask)
        buf.use_mask = self.cuda_graph or not bool((mask == 0).all())

    def _capture(self, buf: _Buffers, cond: _Conditioning):
        """Record the whole Euler loop as one CUDA graph over the static buffers (warm-up on a side stream)."""
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):  # allocator and (compiled) kernels settle before capture
                self._loop(buf, cond)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            buf.out = self._loop(buf, cond)
        return graph


# helpers ----------------------------------------------------------------------------------------------------


def _mark(marks: Marks | None, stage: str) -> None:
    if marks is not None:
        marks(stage)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """q (B, nh, Lq, hd), k/v (B, nkv, Lk, hd), additive mask or None -> (B, Lq, nh*hd)."""
    b, nh, lq, hd = q.shape
    out = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=None if mask is None else mask.to(q.dtype),
        scale=hd**-0.5,
        enable_gqa=k.shape[1] != nh,
    )
    return out.transpose(1, 2).reshape(b, lq, nh * hd)
