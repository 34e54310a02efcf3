"""π0 / π0.5: SigLIP + Gemma backbone (prefix) + Gemma action expert (suffix), sampled by flow matching.

Conventions (openpi / LeRobot 0.4.4): t = 1 is noise, t = 0 is data; x_t = t·ε + (1 − t)·a; the model
predicts u = ε − a; Euler from t = 1 to 0 over the config's time grid (`PiConfig.time_grid`: uniform
dt = −1/steps unless a step-distilled student recorded its own). Layer i of the expert attends jointly with layer i of
the backbone over [prefix | suffix]. At inference the prefix runs once into a KV cache and only the expert
runs per step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from shallowpi.model.attention import additive, attend, make_att_2d, positions
from shallowpi.model.config import PiConfig, check_time_grid, euler_steps
from shallowpi.model.gemma import GemmaStack, Modulation, apply_rope, rope_cos_sin
from shallowpi.model.inputs import check_inputs, pad_last
from shallowpi.model.rtc import RTCGuidance
from shallowpi.model.siglip import SiglipVisionModel, merge_tokens
from shallowpi.observation import Observation


def sincos_time_embedding(t: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """t (B,) -> (B, dim): sin/cos over geometrically spaced periods, computed in float64 like LeRobot."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    x = t.double()[:, None] * (2 * math.pi / period)[None]  # (B, dim/2)
    return torch.cat([x.sin(), x.cos()], dim=1).float()


@dataclass
class JointOutput:
    """Result of the joint (training) pass."""

    v_t: torch.Tensor  # (B, chunk, max_action_dim) fp32
    attn: dict[int, torch.Tensor]  # layer -> (B, nh, T, T) fp32 post-softmax, for captured layers
    prefix_valid: torch.Tensor  # (B, P) bool: valid vision-language keys
    # SigLIP output before the token merge, (B, n_slots, num_patches, W_vis), when asked for; n_slots counts
    # the camera slots the pass ran (a slot masked for the whole batch is dropped by compaction).
    vision: torch.Tensor | None = None
    vision_valid: torch.Tensor | None = None  # (B, n_slots) bool: the slots that hold an image


@dataclass
class SampleTrace:
    actions: torch.Tensor  # (B, chunk, max_action_dim)
    t: list[float] = field(default_factory=list)
    x_t: list[torch.Tensor] = field(default_factory=list)
    v_t: list[torch.Tensor] = field(default_factory=list)
    kv: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # per layer, post-RoPE
    prefix_valid: torch.Tensor | None = None


def sample_time(
    config: PiConfig, batch: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Flow-matching times t (batch,) fp32: Beta(alpha, beta) · scale + offset, as LeRobot / openpi draw them.
    A function of the config only, so data workers draw them without the model's weights."""
    c = config
    beta = torch.distributions.Beta(torch.tensor(c.time_beta_alpha), torch.tensor(c.time_beta_beta))
    if generator is None:
        t = beta.sample((batch,))
    elif c.time_beta_beta == 1.0:  # Beta(a, 1) has CDF x**a: exact inverse-CDF sampling from the generator
        t = torch.rand(batch, generator=generator).pow(1.0 / c.time_beta_alpha)
    else:  # torch's Beta sampler takes no generator: seed a forked global RNG from it instead
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            t = beta.sample((batch,))
    return (t * c.time_scale + c.time_offset).float().to(device)


class PiModel(nn.Module):
    def __init__(self, config: PiConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        c = config
        w = c.expert.width
        self.vision = SiglipVisionModel(c.vision)
        self.projector = nn.Linear(c.vision.token_width, c.vlm.width)
        self.vlm = GemmaStack(c.vlm, c.vocab_size)
        self.expert = GemmaStack(c.expert, None, cond_dim=w if c.uses_adarms else None)
        self.action_in_proj = nn.Linear(c.max_action_dim, w)
        self.action_out_proj = nn.Linear(w, c.max_action_dim)
        if c.variant == "pi0":
            self.state_proj = nn.Linear(c.max_state_dim, w)
            self.action_time_mlp_in = nn.Linear(2 * w, w)
            self.action_time_mlp_out = nn.Linear(w, w)
        else:
            self.time_mlp_in = nn.Linear(w, w)
            self.time_mlp_out = nn.Linear(w, w)
        if self.vlm.embed_tokens.weight.device.type != "meta":
            nn.init.normal_(self.vlm.embed_tokens.weight, std=c.vlm.width**-0.5)
        # Recompute each joint layer in backward instead of storing activations (training memory).
        self.gradient_checkpointing = False
        if c.dtype == "bfloat16":
            self.to_bfloat16()

    # dtype policy -----------------------------------------------------------------------------------------
    def to_bfloat16(self) -> PiModel:
        """LeRobot's bf16 policy: the VLM/expert/vision go to bf16; norms (incl. adaRMS dense) and the vision
        embeddings stay fp32; projections outside paligemma_with_expert stay fp32."""
        keep_fp32 = (
            "input_layernorm",
            "post_attention_layernorm",
            ".norm.",
            "embeddings.patch_embedding",
            "embeddings.position_embedding",
        )
        for stack in ("vision", "projector", "vlm", "expert"):
            for name, p in getattr(self, stack).named_parameters(prefix=stack):
                if not any(s in name for s in keep_fp32):
                    p.data = p.data.to(torch.bfloat16)
        self.config.dtype = "bfloat16"
        return self

    def set_gradient_checkpointing(self, enabled: bool = True) -> PiModel:
        """Recompute each joint layer (attention included) and each SigLIP layer in backward."""
        self.gradient_checkpointing = enabled
        self.vision.gradient_checkpointing = enabled
        return self

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.vlm.layers[0].self_attn.q_proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.action_in_proj.weight.device

    # embeddings -------------------------------------------------------------------------------------------
    def embed_prefix(
        self, obs: Observation, vision: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A checked observation (`check_inputs`) -> embs (B, P, W_vlm), valid (B, P).
        Prefix = [camera tokens per slot | language tokens]. `vision`: this observation's `vision_output`
        when the caller already has it (distillation reads it too)."""
        v = self.config.vision
        n_patch = v.num_tokens
        b, n_cam = obs.batch_size, obs.num_slots
        if vision is None:
            vision = self.vision_output(obs)
        feats = vision.transpose(0, 1).reshape(n_cam * b, v.num_patches, -1)  # (n_cam*B, N_patch, W_vis)
        tok = self.projector(merge_tokens(feats, v.grid, v.merge))  # (n_cam*B, N, W_vlm), no 1/sqrt(d)
        embs = list(tok.view(n_cam, b, n_patch, -1).unbind(0))
        pads = [m[:, None].expand(-1, n_patch) for m in obs.image_masks.unbind(1)]  # n_cam x (B, N)
        lang = self.vlm.embed_tokens(obs.tokens)  # (B, L, W_vlm)
        embs.append(lang * math.sqrt(lang.shape[-1]))
        pads.append(obs.token_masks)
        dtype = self.compute_dtype
        return torch.cat([e.to(dtype) for e in embs], dim=1), torch.cat(pads, dim=1)

    def vision_output(self, obs: Observation) -> torch.Tensor:
        """SigLIP output of every camera slot before the token merge: (B, n_slots, num_patches, W_vis)."""
        b, n_cam = obs.batch_size, obs.num_slots
        # One SigLIP call over all cameras (larger matmuls); cameras are independent sequences.
        pixels = obs.images.transpose(0, 1).reshape(n_cam * b, *obs.images.shape[2:])  # (n_cam*B, 3, H, W)
        out = self.vision(pixels)  # (n_cam*B, N_patch, W_vis)
        return out.view(n_cam, b, *out.shape[1:]).transpose(0, 1)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (n, 3, H, W) -> SigLIP output with merged tokens (n, num_tokens, token_width): the
        projector's input."""
        v = self.config.vision
        return merge_tokens(self.vision(pixels), v.grid, v.merge)

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        c = self.config
        return sincos_time_embedding(t, c.expert.width, c.min_period, c.max_period).to(
            self.action_in_proj.weight.dtype
        )

    def embed_suffix(
        self, x_t: torch.Tensor, t: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """-> embs (B, S, W_exp), valid (B, S), causal_block (B, S), adaRMS cond (B, W_exp) or None."""
        time_emb = self.time_embedding(t)  # (B, W)
        act = self.action_in_proj(x_t)  # (B, chunk, W)
        if self.config.variant == "pi0":
            state_tok = self.state_proj(state)[:, None]  # (B, 1, W)
            h = torch.cat([act, time_emb[:, None].expand_as(act)], dim=-1)  # (B, chunk, 2W)
            act = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(h)))
            embs, cond = torch.cat([state_tok, act], dim=1), None
        else:
            embs = act
            cond = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(time_emb))))  # (B, W)
        valid, causal_block = self.suffix_layout(x_t.shape[0], x_t.device)
        return embs, valid, causal_block, cond

    def suffix_layout(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Suffix validity (B, S) and block starts (B, S): [state (π0)] | action chunk, each its own block."""
        c = self.config
        flags = [1] * (c.suffix_len - c.chunk_size + 1) + [0] * (c.chunk_size - 1)
        causal_block = torch.tensor(flags, dtype=torch.long, device=device).expand(batch, -1)
        return torch.ones(batch, len(flags), dtype=torch.bool, device=device), causal_block

    def _velocity(self, suffix_hidden: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return self.action_head(suffix_hidden, self.expert.norm.modulation(cond, suffix_hidden.dtype))

    def action_head(self, suffix_hidden: torch.Tensor, mod: Modulation | None) -> torch.Tensor:
        """Final expert norm (adaRMS modulation `mod` for π0.5) and action_out_proj over the chunk's tokens:
        suffix_hidden (B, S, W) -> v_t (B, chunk, max_action_dim) fp32."""
        out = self.expert.norm.normalize(suffix_hidden, mod)
        out = out[:, -self.config.chunk_size :].to(self.action_out_proj.weight.dtype)
        return self.action_out_proj(out.float() if out.dtype != torch.float32 else out)

    # joint (training) pass --------------------------------------------------------------------------------
    def forward_joint(
        self,
        obs: Observation,
        x_t: torch.Tensor,
        time: torch.Tensor,
        *,
        capture: Iterable[int] = (),
        compact: bool = True,
        vision: bool = False,
    ) -> JointOutput:
        """v_t for given x_t and t with the whole [prefix | suffix] sequence in one pass per layer.

        `capture` names layers whose post-softmax attention probabilities are returned (B, nh, T, T).
        `vision` also returns the SigLIP output the pass computed (no second vision pass).
        `compact` drops camera slots masked for the whole batch and language padding shared by the whole
        batch; masked keys get exactly zero probability, so valid outputs do not change.
        """
        obs = check_inputs(self.config, obs, compact=compact)
        capture = set(capture)
        bad = [i for i in capture if not 0 <= i < self.config.depth]
        if bad:
            raise ValueError(f"capture layers {bad} out of range for depth {self.config.depth}")
        x_t = self._check_chunk(x_t, "x_t")
        vision_out = self.vision_output(obs) if vision else None
        prefix_embs, prefix_valid = self.embed_prefix(obs, vision_out)
        suffix_embs, suffix_valid, suffix_causal_block, cond = self.embed_suffix(x_t, time, obs.state)
        p_len = prefix_embs.shape[1]
        valid = torch.cat([prefix_valid, suffix_valid], dim=1)  # (B, T)
        causal_block = torch.cat(
            [torch.zeros_like(prefix_valid, dtype=torch.long), suffix_causal_block], dim=1
        )
        mask = additive(make_att_2d(valid, causal_block))  # (B, 1, T, T)
        cos, sin = rope_cos_sin(positions(valid), self.config.vlm.head_dim, self.config.vlm.rope_theta)

        dtype = self.compute_dtype
        xp, xs = prefix_embs.to(dtype), suffix_embs.to(dtype)
        attn: dict[int, torch.Tensor] = {}
        for i in range(self.config.depth):
            args = (i, xp, xs, cond, cos, sin, mask, i in capture, p_len)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                xp, xs, probs = checkpoint(self._joint_layer, *args, use_reentrant=False)
            else:
                xp, xs, probs = self._joint_layer(*args)
            if probs is not None:
                attn[i] = probs
        return JointOutput(
            self._velocity(xs, cond),
            attn,
            prefix_valid,
            vision_out,
            obs.image_masks if vision else None,
        )

    def _joint_layer(self, i, xp, xs, cond, cos, sin, mask, want_probs: bool, p_len: int):
        """Layer i of both stacks: own norms and projections, one softmax over [prefix | suffix]."""
        lp, ls = self.vlm.layers[i], self.expert.layers[i]
        mod = ls.modulation(cond, xs.dtype)  # None for π0's plain-RMSNorm expert
        qp, kp, vp = lp.qkv(xp)
        qs, ks, vs = ls.qkv(xs, mod)
        q = apply_rope(torch.cat([qp, qs], dim=2), cos, sin)  # (B, nh, T, hd)
        k = apply_rope(torch.cat([kp, ks], dim=2), cos, sin)  # (B, nkv, T, hd)
        v = torch.cat([vp, vs], dim=2)
        out, probs = attend(q, k, v, mask, want_probs=want_probs)  # out (B, T, nh*hd)
        # The prefix stream after the last layer is never read: skip its o_proj and MLP.
        if i < self.config.depth - 1:
            xp = lp.post_attention(xp, out[:, :p_len])
        xs = ls.post_attention(xs, out[:, p_len:], mod)
        return xp, xs, probs

    def loss(
        self,
        obs: Observation,
        actions: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        time: torch.Tensor | None = None,
        compact: bool = True,
    ) -> torch.Tensor:
        """Elementwise flow-matching loss (u − v)², (B, chunk, max_action_dim)."""
        actions = self._check_chunk(actions, "actions")
        b = actions.shape[0]
        if noise is None:
            noise = torch.randn_like(actions)
        noise = self._check_chunk(noise, "noise")
        if time is None:
            time = self.sample_time(b, actions.device)
        if time.shape != (b,):
            raise ValueError(f"time: expected shape ({b},), got {tuple(time.shape)}")
        x_t, u_t = self.interpolate(actions, noise, time)
        v_t = self.forward_joint(obs, x_t, time, compact=compact).v_t
        return F.mse_loss(u_t, v_t, reduction="none")

    @staticmethod
    def interpolate(actions: torch.Tensor, noise: torch.Tensor, time: torch.Tensor):
        """x_t = t·ε + (1 − t)·a and the target u = ε − a."""
        t = time[:, None, None].to(actions.dtype)
        return t * noise + (1 - t) * actions, noise - actions

    def sample_time(self, batch: int, device: torch.device | str = "cpu", generator=None) -> torch.Tensor:
        return sample_time(self.config, batch, device, generator)

    # inference --------------------------------------------------------------------------------------------
    def prefix_cache(
        self, prefix_embs: torch.Tensor, prefix_valid: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Run the backbone once over the prefix; per layer post-RoPE K and V, (B, nkv, P, hd) each.
        Differentiable (step distillation trains through it); the samplers call it under no_grad."""
        mask = additive(make_att_2d(prefix_valid, torch.zeros_like(prefix_valid, dtype=torch.long)))
        cos, sin = rope_cos_sin(positions(prefix_valid), self.config.vlm.head_dim, self.config.vlm.rope_theta)
        x = prefix_embs.to(self.compute_dtype)
        cache = []
        for i, layer in enumerate(self.vlm.layers):
            q, k, v = layer.qkv(x)
            k = apply_rope(k, cos, sin)
            cache.append((k, v))
            if i == len(self.vlm.layers) - 1:
                break  # the last layer's attention output and MLP never reach the actions
            out, _ = attend(apply_rope(q, cos, sin), k, v, mask)
            x = layer.post_attention(x, out)
        return cache

    def denoise_step(
        self,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        prefix_valid: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        state: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One expert pass over the suffix against the cached prefix: -> v_t (B, chunk, max_action_dim).
        Differentiable, like `prefix_cache`."""
        suffix_embs, suffix_valid, suffix_causal_block, cond = self.embed_suffix(x_t, t, state)
        if rope is None or mask is None:
            rope, mask = self.suffix_rope_and_mask(prefix_valid, suffix_valid, suffix_causal_block)
        cos, sin = rope
        x = suffix_embs.to(self.compute_dtype)
        for layer, (pk, pv) in zip(self.expert.layers, cache, strict=True):
            mod = layer.modulation(cond, x.dtype)
            q, k, v = layer.qkv(x, mod)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            out, _ = attend(q, torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2), mask)
            x = layer.post_attention(x, out, mod)
        return self._velocity(x, cond)

    def suffix_rope_and_mask(
        self, prefix_valid: torch.Tensor, suffix_valid: torch.Tensor, suffix_causal_block: torch.Tensor
    ):
        """Suffix positions continue after the valid prefix tokens; suffix sees valid prefix + its blocks."""
        b, s = suffix_valid.shape
        pos = prefix_valid.long().sum(-1, keepdim=True) + positions(suffix_valid)  # (B, S)
        rope = rope_cos_sin(pos, self.config.expert.head_dim, self.config.expert.rope_theta)
        mask2d = torch.cat(
            [prefix_valid[:, None, :].expand(b, s, -1), make_att_2d(suffix_valid, suffix_causal_block)], dim=2
        )
        return rope, additive(mask2d)  # mask (B, 1, S, P+S)

    @torch.no_grad()
    def sample_trace(
        self,
        obs: Observation,
        *,
        noise: torch.Tensor | None = None,
        num_steps: int | None = None,
        compact: bool = True,
        keep_trace: bool = True,
        guidance: RTCGuidance | None = None,
    ) -> SampleTrace:
        """Euler sampling over `config.time_grid(num_steps)` with the prefix cached once; keeps every step's
        t, x_t and v_t (the guided v_t with real-time chunking `guidance`)."""
        obs = check_inputs(self.config, obs, compact=compact)
        b = obs.batch_size
        shape = (b, self.config.chunk_size, self.config.max_action_dim)
        if noise is None:
            noise = torch.randn(shape, device=obs.tokens.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise: expected shape {shape}, got {tuple(noise.shape)}")
        grid = self.config.time_grid(num_steps)
        prefix_embs, prefix_valid = self.embed_prefix(obs)
        cache = self.prefix_cache(prefix_embs, prefix_valid)
        trace = SampleTrace(actions=noise, kv=cache if keep_trace else [], prefix_valid=prefix_valid)
        if guidance is not None and guidance.target.shape[0] != b:
            raise ValueError(f"guidance: batch {guidance.target.shape[0]}, the observation's is {b}")
        trace.actions = self.integrate(
            cache, prefix_valid, noise.float(), grid, obs.state, trace if keep_trace else None, guidance
        )
        return trace

    @torch.no_grad()
    def integrate(
        self,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        prefix_valid: torch.Tensor,
        x: torch.Tensor,
        grid: Sequence[float],
        state: torch.Tensor | None,
        trace: SampleTrace | None = None,
        guidance: RTCGuidance | None = None,
    ) -> torch.Tensor:
        """Euler x ← x + (t_{k+1} − t_k)·v(x, t_k) along `grid` (decreasing, within [0, 1]; it need not
        start at 1: step distillation integrates single intervals) over a cached prefix. x (B, chunk, A).
        `guidance`: real-time chunking, v replaced by the guided velocity (`shallowpi.model.rtc`)."""
        b = x.shape[0]
        rope, mask = self.suffix_rope_and_mask(prefix_valid, *self.suffix_layout(b, x.device))  # every step's
        for t_k, dt in euler_steps(check_time_grid(grid, full=False)):
            t = torch.full((b,), t_k, dtype=torch.float32, device=x.device)
            if guidance is None:
                v = self.denoise_step(cache, prefix_valid, x, t, state, rope, mask)
            else:
                v = guidance.velocity(x, t_k, self._velocity_at(cache, prefix_valid, t, state, rope, mask))
            if trace is not None:
                trace.t.append(t_k)
                trace.x_t.append(x)
                trace.v_t.append(v)
            x = x + dt * v
        return x

    def _velocity_at(self, cache, prefix_valid, t, state, rope, mask):
        """x_t -> v(x_t, t) over the cached prefix (the function real-time chunking differentiates)."""
        return lambda x_t: self.denoise_step(cache, prefix_valid, x_t, t, state, rope, mask)

    def sample_actions(
        self,
        obs: Observation,
        *,
        noise: torch.Tensor | None = None,
        num_steps: int | None = None,
        guidance: RTCGuidance | None = None,
    ) -> torch.Tensor:
        """Sample an action chunk: (B, chunk, max_action_dim), in the model's normalised action space.
        `guidance`: real-time chunking toward the previous chunk's tail (`shallowpi.model.rtc`)."""
        trace = self.sample_trace(obs, noise=noise, num_steps=num_steps, keep_trace=False, guidance=guidance)
        return trace.actions

    # helpers ----------------------------------------------------------------------------------------------
    def _check_chunk(self, x: torch.Tensor, name: str) -> torch.Tensor:
        c = self.config
        if x.ndim != 3 or x.shape[1] != c.chunk_size:
            raise ValueError(
                f"{name}: expected [B, {c.chunk_size}, <= {c.max_action_dim}], got {tuple(x.shape)}"
            )
        if x.shape[2] > c.max_action_dim:
            raise ValueError(f"{name}: action dim {x.shape[2]} is above max_action_dim {c.max_action_dim}")
        return pad_last(x.float(), c.max_action_dim)

    def num_parameters(self) -> dict[str, int]:
        parts = {"vision": self.vision, "projector": self.projector, "vlm": self.vlm, "expert": self.expert}
        counts = {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items()}
        seen = {id(p) for m in parts.values() for p in m.parameters()}
        counts["projections"] = sum(p.numel() for p in self.parameters() if id(p) not in seen)
        counts["total"] = sum(counts.values())
        return counts
