"""Fast inference runtime: prefix once into a preallocated KV cache, then an expert-only Euler loop, over folded
weights and static buffers.

    engine = InferenceEngine(model, batch_size=1)                  # CPU fp32, eager, folded
    engine = InferenceEngine(model, compile=True)                   # + torch.compile, artifacts cached on disk
    engine = InferenceEngine(model, device="cuda", dtype="bfloat16", cuda_graph=True)
    actions = engine.sample_actions(obs, noise=noise)                # obs: a shallowpi.Observation

What it does beyond `PiModel.sample_actions` (whose outputs it equals within 1e-5 in fp32 on CPU):
- The schedule is the model's (`PiConfig.time_grid`: its recorded grid for a step-distilled student, else
  uniform Euler); an explicit `num_steps` overrides it as in `PiModel.sample_actions`.
- Folded weights (`shallowpi.infer.fold`, built once here; `refresh()` folds again after the weights
  change): norm weights inside the next projection, one q/k/v(+RoPE) matmul and one gate-up matmul per layer,
  the softmax scale in q. At batch 1 and small widths a call's time is per-operator overhead, so the loop
  issues about 16 operators per expert layer (the model's own modules: about 70).
- Per-call work that depends only on the weights and the time schedule is done once per time grid and
  cached: the time embeddings, π0.5's time MLP and every adaRMS modulation of every layer and step (on CUDA
  in fp32 its shift becomes a per-step bias of the projection after the norm, shift @ W), π0's time half of
  `action_time_mlp_in`. π0's state token, which t and x_t never reach, runs through the expert once per
  call with the prefix; each Euler step runs the action tokens only (`shallowpi.infer.eager`).
- Static buffers, reused across calls: the KV cache is one (B, nkv, P + S, hd) buffer per layer (the prefix
  fills [:P] once, each Euler step writes its suffix K/V into [P:] in place), and the projections, RoPE and
  residual stream write into preallocated tensors whose views (heads, cache slices) are made once.
- Kept camera slots go through SigLIP as one batch; the backbone's last layer computes only K and V.
- Attention runs through SDPA; the mask is dropped when every key is valid (π0.5 with an all-valid compacted
  prefix), the common batch-1 case.
- Built and called in or out of `torch.inference_mode`, for a model built in or out of it: static tensors
  are kept per mode (those made in it cannot be written outside it), and weights that are inference tensors
  (no version counter) are watched by their storage only. Jacobian guidance samples outside it by itself.
- `cuda_graph=True` captures the whole denoising loop once per prefix length and replays it (language padding
  is then kept, so the prefix length only changes when the set of masked camera slots changes).
- `compile=True` runs the prefix and each Euler step through `torch.compile` (`shallowpi.infer.compiled`),
  with inductor's caches on disk so that a later process reuses the compiled code (`compile_cache_dir`).
- `fold=False` runs the model's own modules instead (the engine before folding; a baseline for benchmarks).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F

from shallowpi.infer.eager import FoldedRun, _Views
from shallowpi.infer.fold import FoldedPi
from shallowpi.model.attention import additive, make_att_2d, positions
from shallowpi.model.config import euler_steps
from shallowpi.model.gemma import LayerModulation, Modulation, apply_rope, rope_cos_sin
from shallowpi.model.inputs import check_inputs
from shallowpi.model.pi import PiModel, sincos_time_embedding
from shallowpi.model.rtc import RTCGuidance
from shallowpi.observation import Observation

STAGES = ("vision", "prefix", "denoise")
Marks = Callable[[str], None]  # called with a stage name when that stage's work has been issued


@dataclass
class _Conditioning:
    """Per-time-grid constants of the Euler loop (depend on weights and the t schedule only)."""

    times: list[float]  # t_k at which the velocity is evaluated
    dts: list[float]  # Euler step after each evaluation (negative)
    # folded: [step] -> per layer (rms weight, qkv bias, gate, rms weight, gate-up bias, gate) for π0.5, () for π0
    layers: list[list[tuple]] = field(default_factory=list)
    final_scale: list[torch.Tensor | None] = field(default_factory=list)  # [step] final norm's weight
    final_shift: list[torch.Tensor | None] = field(default_factory=list)  # [step] π0.5 in bf16: its shift
    out_bias: list[torch.Tensor] = field(
        default_factory=list
    )  # [step] (A,): action_out_proj bias (+ shift @ W)
    # unfolded (the model's modules): adaRMS modulations [step][layer] and the final norm's, π0's time half
    layer_mods: list[list[LayerModulation]] = field(default_factory=list)
    final_mods: list[Modulation] = field(default_factory=list)
    time_proj: torch.Tensor | list[torch.Tensor] | None = None  # π0: (steps, B, 1, W) / folded [step] (W,)


@dataclass
class _Buffers:
    """Static tensors for one prefix length P (shapes never change once allocated)."""

    prefix_len: int
    keys: list[torch.Tensor]  # per layer (B, nkv, P + S, hd): post-RoPE prefix keys, then suffix keys
    values: list[torch.Tensor]  # per layer (B, nkv, P + S, hd)
    use_mask: bool  # False when every key is valid for every query (attention without a mask)
    noise: torch.Tensor  # (B, chunk, A) fp32, copied in per call
    state: torch.Tensor | None  # π0: (B, max_state_dim) fp32
    out: torch.Tensor | None = None  # result of the captured graph
    graphs: dict = field(default_factory=dict)  # time grid (tuple) -> torch.cuda.CUDAGraph
    views: _Views | None = None  # folded: the static workspaces and cache views for this P
    # unfolded: the suffix's additive mask (B, 1, S, P + S) and RoPE tables (B, 1, S, hd)
    mask: torch.Tensor | None = None
    cos: torch.Tensor | None = None
    sin: torch.Tensor | None = None


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
        compile_cache_dir: str | None = None,
        max_cached_shapes: int = 4,
        fold: bool = True,
    ) -> None:
        """`model` is used in place (moved to `device`, cast to bf16 if `dtype="bfloat16"`)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = torch.device(device) if device is not None else model.device
        if cuda_graph and device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a CUDA device, got {device}")
        if dtype not in (None, "float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
        if compile and not fold:
            raise ValueError("compile=True runs the folded graph; it needs fold=True")
        model = model.to(device).eval()
        if dtype == "bfloat16" and model.compute_dtype != torch.bfloat16:
            model.to_bfloat16()
        if dtype == "float32" and model.compute_dtype != torch.float32:
            raise ValueError("model is bf16; build it in fp32 to run the engine in fp32")
        self.model, self.config, self.device = model, model.config, device
        self.batch_size = batch_size
        self.compact = compact
        self.cuda_graph = cuda_graph
        self.fold = fold
        self.compiled = None
        # Graph replay and compiled code need a fixed prefix length: keep language padding (masked).
        self.trim_language = compact and not cuda_graph and not compile
        self.max_cached_shapes = max_cached_shapes
        self._cond: dict[tuple, _Conditioning] = {}
        self._buffers: dict[tuple[int, bool], _Buffers] = {}  # (prefix length, inference mode) -> buffers
        self.folded: FoldedPi | None = None
        self.run: FoldedRun | None = None  # the workspaces of the current inference mode (`_runs`)
        self._runs: dict[bool, FoldedRun] = {}
        self.refresh()
        self._loop = self._denoise_loop
        if compile:
            from shallowpi.infer.compiled import CompiledGraph

            self.compiled = CompiledGraph(self, mode=compile_mode, cache_dir=compile_cache_dir)

    # public API -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_actions(
        self,
        obs: Observation,
        *,
        noise: torch.Tensor | None = None,
        num_steps: int | None = None,
        marks: Marks | None = None,
        guidance: RTCGuidance | None = None,
    ) -> torch.Tensor:
        """Same contract as `PiModel.sample_actions`: -> (B, chunk, max_action_dim) fp32.

        `marks(stage)` is called after each of "vision", "prefix", "denoise" has been issued (bench timing).
        `guidance`: real-time chunking (`shallowpi.model.rtc`); the guided loop runs eagerly (no graph replay).
        """
        grid = self.config.time_grid(num_steps)  # validates num_steps before any work
        if guidance is not None:
            guidance = self._check_guidance(guidance)
            if guidance.config.jacobian and torch.is_inference_mode_enabled():  # its VJP needs autograd
                with torch.inference_mode(False):
                    return self.sample_actions(
                        obs, noise=noise, num_steps=num_steps, marks=marks, guidance=guidance
                    )
        if self.fold and self._weights_stamp() != self._stamp:
            self.refresh()  # the model's weights changed in place (training, a corrupted buffer): fold again
        obs = self.check(obs)
        if self.compiled is not None:
            return self.compiled.sample(obs, noise, tuple(grid), marks, guidance)
        embs, valid = self.encode(obs)
        _mark(marks, "vision")
        buf = self.prefill(embs, valid, obs.state)
        _mark(marks, "prefix")
        if guidance is None:
            actions = self.denoise(buf, noise, len(grid) - 1)
        else:
            actions = self.denoise_guided(buf, noise, tuple(grid), guidance, valid)
        _mark(marks, "denoise")
        return actions

    def refresh(self) -> None:
        """Fold the weights again and forget cached conditioning and graphs (after the weights changed). The
        folded engine does so by itself when a weight of the model changed in place or was replaced."""
        self._cond.clear()
        self._buffers.clear()
        params = list(self.model.parameters())
        # weights made under torch.inference_mode have no version counter: only their storage is watched
        self._versioned = [p for p in params if not p.is_inference()]
        self._unversioned = [p for p in params if p.is_inference()]
        self._stamp = self._weights_stamp()
        if self.fold:
            self.folded = FoldedPi(self.model)
            self._runs.clear()
            self.run = self._run_for(torch.is_inference_mode_enabled())
        if self.compiled is not None:
            self.compiled.reset()

    def _weights_stamp(self) -> list[tuple[int, int]]:
        """Each parameter's version counter (bumped by in-place writes) and storage: ~60 µs for 400 tensors.
        Inference tensors (a model built under `torch.inference_mode`) have no counter: an in-place write to
        one is not seen (call `refresh()`), new storage (`p.data = ...`) is."""
        return [(p._version, p.data_ptr()) for p in self._versioned] + [
            (-1, p.data_ptr()) for p in self._unversioned
        ]

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
        """Vision (all kept slots in one SigLIP batch) + language embedding -> (B, P, W_vlm), valid (B, P)."""
        m, b = self.model, self.batch_size
        n_cam, n_patch = obs.num_slots, self.config.vision.num_tokens  # image tokens after the merge
        images = obs.images.to(self.device)  # (B, n_cam, 3, H, W)
        pixels = images.transpose(0, 1).reshape(n_cam * b, *images.shape[2:])  # (n_cam * B, 3, H, W)
        # SigLIP, tokens merged m x m, projector: (n_cam*B, N, W_vlm)
        vis = self.folded.vision(pixels) if self.fold else m.projector(m.image_features(pixels))
        if b > 1:
            vis = vis.view(n_cam, b, n_patch, -1).transpose(0, 1)
        vis = vis.reshape(b, n_cam * n_patch, -1)
        cam_valid = obs.image_masks.to(self.device)  # (B, n_cam)
        tokens = obs.tokens.to(self.device)
        if self.fold:
            lang = self.folded.embed_language(tokens)  # (B, L, W_vlm)
        else:
            lang = m.vlm.embed_tokens(tokens)
            lang = lang * math.sqrt(lang.shape[-1])
        dtype = m.compute_dtype
        embs = torch.cat([vis.to(dtype), lang.to(dtype)], dim=1)
        valid = torch.cat([cam_valid.repeat_interleave(n_patch, dim=1), obs.token_masks.to(self.device)], 1)
        return embs, valid

    def prefill(self, embs: torch.Tensor, valid: torch.Tensor, state: torch.Tensor | None) -> _Buffers:
        """Backbone over the prefix; writes post-RoPE K/V of every layer into the static cache (and, folded,
        π0's state token's, which no Euler step changes)."""
        buf = self._buffers_for(embs.shape[1])
        if state is not None:
            buf.state.copy_(state)
        if self.fold:
            if state is not None:
                torch.addmm(self.folded.state_b, buf.state, self.folded.state_w, out=self.run.state_tok)
            buf.use_mask = self.run.suffix_geometry(buf.views, valid) or self.cuda_graph
            self.run.prefill(buf.views, embs, valid, use_bias=buf.use_mask)
            return buf
        all_valid = not self.cuda_graph and bool(valid.all())
        mask = None if all_valid else additive(make_att_2d(valid, torch.zeros_like(valid, dtype=torch.long)))
        self._prefill_unfolded(buf, embs, valid, mask)
        self._suffix_geometry(buf, valid)
        return buf

    def denoise(self, buf: _Buffers, noise: torch.Tensor | None, steps: int | None = None) -> torch.Tensor:
        """Euler loop over `config.time_grid(steps)` (None: the model's own schedule)."""
        grid = tuple(self.config.time_grid(steps))
        buf.noise.copy_(self.check_noise(noise))
        cond = self._conditioning(grid)
        if not self.cuda_graph:
            return self._loop(buf, cond).clone() if self.fold else self._loop(buf, cond)
        if grid not in buf.graphs:
            buf.graphs[grid] = self._capture(buf, cond)
        buf.graphs[grid].replay()
        return buf.out.clone()

    def denoise_guided(
        self,
        buf: _Buffers,
        noise: torch.Tensor | None,
        grid: tuple[float, ...],
        guidance: RTCGuidance,
        prefix_valid: torch.Tensor,
    ) -> torch.Tensor:
        """The Euler loop with real-time chunking: each step's velocity guided toward the previous chunk."""
        cond = self._conditioning(grid)
        x = self.check_noise(noise).float()  # (B, chunk, A)
        if guidance.config.jacobian:  # differentiable: the model's modules over the cached prefix
            p = buf.prefix_len
            cache = [(k[:, :, :p], v[:, :, :p]) for k, v in zip(buf.keys, buf.values, strict=True)]

            def velocity(k: int, t_k: float, x_t: torch.Tensor) -> torch.Tensor:
                t = torch.full((x_t.shape[0],), t_k, dtype=torch.float32, device=x_t.device)
                return self.model.denoise_step(cache, prefix_valid, x_t, t, buf.state)

        elif self.fold:

            def velocity(k: int, t_k: float, x_t: torch.Tensor) -> torch.Tensor:
                return self.run.velocity(buf.views, cond, k, x_t, buf.use_mask)

        else:
            state_tok = None if buf.state is None else self.model.state_proj(buf.state)[:, None]  # (B, 1, W)

            def velocity(k: int, t_k: float, x_t: torch.Tensor) -> torch.Tensor:
                return self._velocity(buf, cond, k, x_t, state_tok)

        for k, (t_k, dt) in enumerate(zip(cond.times, cond.dts, strict=True)):
            x = x + dt * guidance.velocity(x, t_k, partial(velocity, k, t_k))
        return x

    def _check_guidance(self, guidance: RTCGuidance) -> RTCGuidance:
        c = self.config
        want = (self.batch_size, c.chunk_size, c.max_action_dim)
        if tuple(guidance.target.shape) != want:
            raise ValueError(f"guidance: target of shape {tuple(guidance.target.shape)}, expected {want}")
        if guidance.config.jacobian and self.compiled is not None:
            raise ValueError("real-time chunking with jacobian=True needs the eager engine (compile=False)")
        if guidance.config.jacobian and self._unversioned:
            raise ValueError(
                "real-time chunking with jacobian=True differentiates through the expert, which weights made "
                "under torch.inference_mode cannot take part in: load the model outside inference mode"
            )
        return guidance.to(self.device)

    def check_noise(self, noise: torch.Tensor | None) -> torch.Tensor:
        b, c = self.batch_size, self.config
        shape = (b, c.chunk_size, c.max_action_dim)
        if noise is None:
            return torch.randn(shape, device=self.device)
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise: expected shape {shape}, got {tuple(noise.shape)}")
        return noise

    # the unfolded path (the model's own modules) ----------------------------------------------------------
    def _prefill_unfolded(self, buf: _Buffers, embs, valid, mask) -> None:
        cfg = self.config.vlm
        cos, sin = rope_cos_sin(positions(valid), cfg.head_dim, cfg.rope_theta)
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

    def _denoise_unfolded(self, buf: _Buffers, cond: _Conditioning) -> torch.Tensor:
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

    def _denoise_loop(self, buf: _Buffers, cond: _Conditioning) -> torch.Tensor:
        if self.fold:
            return self.run.denoise(buf.views, cond, buf.noise, use_bias=buf.use_mask)
        return self._denoise_unfolded(buf, cond)

    # caches -----------------------------------------------------------------------------------------------
    def _conditioning(self, grid: tuple[float, ...] | int | None) -> _Conditioning:
        """Constants for one time grid (a step count or None means `config.time_grid(that)`)."""
        if grid is None or isinstance(grid, int):
            grid = tuple(self.config.time_grid(grid))
        if grid not in self._cond:
            schedule = euler_steps(grid)  # same floats as PiModel.integrate
            cond = _Conditioning([t for t, _ in schedule], [dt for _, dt in schedule])
            if self.fold:
                t = torch.tensor(cond.times, dtype=torch.float32, device=self.device)  # a row per step
                c = self.config
                self.run.conditioning(
                    cond, sincos_time_embedding(t, c.expert.width, c.min_period, c.max_period)
                )
            else:
                self._unfolded_conditioning(cond)
            self._cond[grid] = cond
        return self._cond[grid]

    def _unfolded_conditioning(self, cond: _Conditioning) -> None:
        m, c, b = self.model, self.config, self.batch_size
        steps = len(cond.times)
        t = torch.tensor(cond.times, dtype=torch.float32, device=self.device).repeat_interleave(b)
        w = c.expert.width
        temb = sincos_time_embedding(t, w, c.min_period, c.max_period).to(m.action_in_proj.weight.dtype)
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

    def _run_for(self, inference: bool) -> FoldedRun:
        if inference not in self._runs:
            self._runs[inference] = FoldedRun(self.folded, self.batch_size, self.device)
        return self._runs[inference]

    def _buffers_for(self, prefix_len: int) -> _Buffers:
        # Static tensors (these buffers and the folded run's workspaces), one set per inference mode: tensors
        # made in inference mode cannot be written outside it (jacobian guidance, a caller outside it), and
        # inference tensors are the cheaper ones to write in it.
        mode = torch.is_inference_mode_enabled()
        if self.fold:
            self.run = self._run_for(mode)
        key = (prefix_len, mode)
        if key in self._buffers:
            return self._buffers[key]
        if len(self._buffers) >= self.max_cached_shapes:
            self._buffers.pop(next(iter(self._buffers)))  # oldest shape goes (and its graphs)
        c, b, dev, dtype = self.config, self.batch_size, self.device, self.model.compute_dtype
        s, cfg = c.suffix_len, c.expert
        kv_shape = (b, cfg.num_kv_heads, prefix_len + s, cfg.head_dim)
        buf = _Buffers(
            prefix_len=prefix_len,
            keys=[torch.zeros(kv_shape, dtype=dtype, device=dev) for _ in range(c.depth)],
            values=[torch.zeros(kv_shape, dtype=dtype, device=dev) for _ in range(c.depth)],
            use_mask=True,
            noise=torch.zeros(b, c.chunk_size, c.max_action_dim, device=dev),
            state=torch.zeros(b, c.max_state_dim, device=dev) if c.variant == "pi0" else None,
        )
        if self.fold:
            buf.views = self.run.views(buf.keys, buf.values, prefix_len)
        else:
            buf.mask = torch.zeros(b, 1, s, prefix_len + s, dtype=dtype, device=dev)
            buf.cos = torch.zeros(b, 1, s, cfg.head_dim, device=dev)
            buf.sin = torch.zeros(b, 1, s, cfg.head_dim, device=dev)
        self._buffers[key] = buf
        return buf

    def _suffix_geometry(self, buf: _Buffers, prefix_valid: torch.Tensor) -> None:
        """Suffix RoPE and mask for this call's prefix validity, written into the static buffers (unfolded)."""
        b, s = self.batch_size, self.config.suffix_len
        suffix_valid = torch.ones(b, s, dtype=torch.bool, device=self.device)
        causal_block = [1] * (s - self.config.chunk_size + 1) + [0] * (self.config.chunk_size - 1)
        suffix_causal_block = torch.tensor(causal_block, dtype=torch.long, device=self.device).expand(b, -1)
        (cos, sin), mask = self.model.suffix_rope_and_mask(prefix_valid, suffix_valid, suffix_causal_block)
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
