"""Real-time chunking (RTC): sample chunk k+1 while chunk k still executes, guided toward chunk k's tail.

Physical Intelligence 2025, "Real-Time Execution of Action Chunking Flow Policies"; numerics as LeRobot 0.6.1's
`RTCProcessor` (`lerobot/policies/rtc/modeling_rtc.py`), the implementation π0 / π0.5 users run.

    cfg = RTCConfig()                                           # LINEAR, max guidance 10, horizon 10
    guide = RTCGuidance.build(cfg, prev_chunk, inference_delay=3, chunk_size=50, action_dim=32)
    actions = model.sample_actions(obs, noise=noise, guidance=guide)

`prev_chunk` (B, n, a) is the unexecuted tail of the previous chunk at request time, in the model's normalised
action space; its row 0 lines up with the new chunk's row 0. The robot executes its first `inference_delay`
rows while the new chunk is sampled, so those rows are frozen (weight 1); rows up to the execution horizon are
softly guided (the schedule), later rows are free (weight 0). Shorter tails and fewer action dims are padded
with zeros, as LeRobot pads them (the padded dims are then guided toward 0).

Time: shallowpi (like openpi / LeRobot) runs t from 1 (noise) to 0 (data); the paper's τ = 1 − t. The
denoised estimate is x̂₁ = x_t − t·v, and the guided velocity v − w(t)·J, with J = (∂x̂₁/∂x_t)ᵀ·e and
e = (prev − x̂₁)·weights. `jacobian=False` (LeRobot 0.6.1's numerics: its velocity is computed before x_t
requires grad, so ∂v/∂x_t never enters) uses J = e; `jacobian=True` takes the vector-Jacobian product through
the expert with the prefix KV cache held fixed (the paper's ΠGDM guidance).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

SCHEDULES = ("ZEROS", "ONES", "LINEAR", "EXP")
Velocity = Callable[[torch.Tensor], torch.Tensor]  # x_t (B, chunk, A) -> v_t (B, chunk, A)


@dataclass
class RTCConfig:
    """How the overlap is guided (LeRobot's `RTCConfig` fields and defaults, plus `jacobian`)."""

    prefix_attention_schedule: str = "LINEAR"
    max_guidance_weight: float = 10.0
    execution_horizon: int = 10
    jacobian: bool = False  # True: VJP through the expert (the paper); False: LeRobot 0.6.1's J = e

    def validate(self) -> RTCConfig:
        if self.prefix_attention_schedule not in SCHEDULES:
            raise ValueError(
                f"prefix_attention_schedule must be one of {', '.join(SCHEDULES)}, "
                f"got {self.prefix_attention_schedule!r}"
            )
        w = self.max_guidance_weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w <= 0:
            raise ValueError(f"max_guidance_weight must be a finite number > 0, got {w!r}")
        h = self.execution_horizon
        if isinstance(h, bool) or not isinstance(h, int) or h < 1:
            raise ValueError(f"execution_horizon must be an integer >= 1, got {h!r}")
        return self


def prefix_weights(schedule: str, start: int, end: int, total: int) -> torch.Tensor:
    """Per-row guidance weights (total,) fp32: 1 for the first `start` rows (executed during inference), the
    schedule's decay up to `end` (the execution horizon), 0 after."""
    start = min(start, end)
    w = torch.zeros(total)
    if schedule == "ZEROS":
        w[:start] = 1.0
        return w
    if schedule == "ONES":
        w[:end] = 1.0
        return w
    # LINEAR / EXP: strictly between 1 and 0 over rows [start, min(end, total))
    n = min(end, total) - start
    ramp = torch.linspace(1, 0, n + 2)[1:-1] if n > 0 else torch.zeros(0)
    if schedule == "EXP":
        ramp = ramp * torch.expm1(ramp).div(math.e - 1)
    w = torch.cat([torch.ones(min(start, total)), ramp, torch.zeros(max(total - end, 0))])
    return w[:total]


def guidance_weight(t: float, max_weight: float) -> float:
    """min(β, (1 − τ)/τ · 1/r²), r² = (1 − τ)² / ((1 − τ)² + τ²), τ = 1 − t (the paper's clipped weight)."""
    tau = 1.0 - t
    if tau <= 0.0:
        return float(max_weight)  # t = 1: (1 − τ)/τ is +inf, clipped
    if tau >= 1.0:
        return 0.0  # t = 0: 0·inf, which LeRobot's nan_to_num makes 0
    c = (1.0 - tau) / tau
    inv_r2 = ((1.0 - tau) ** 2 + tau**2) / (1.0 - tau) ** 2
    return min(c * inv_r2, float(max_weight))


@dataclass
class RTCGuidance:
    """One request's guidance: the padded target and per-row weights, ready for every Euler step."""

    config: RTCConfig
    target: torch.Tensor  # (B, chunk, A) fp32: the previous chunk's tail, zero-padded
    weights: torch.Tensor  # (1, chunk, 1) fp32
    inference_delay: int

    @classmethod
    def build(
        cls,
        config: RTCConfig,
        prev_chunk: torch.Tensor,
        *,
        inference_delay: int,
        chunk_size: int,
        action_dim: int,
        batch: int | None = None,
    ) -> RTCGuidance:
        """`prev_chunk` (B, n, a) or (n, a), n <= chunk_size, a <= action_dim (normalised actions);
        `inference_delay` in control steps, 0 <= d <= n."""
        config.validate()
        d = inference_delay
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise ValueError(f"inference_delay must be an integer >= 0, got {d!r}")
        prev = prev_chunk if prev_chunk.ndim == 3 else prev_chunk[None]
        if prev.ndim != 3 or prev.shape[1] < 1 or prev.shape[1] > chunk_size or prev.shape[2] > action_dim:
            raise ValueError(
                f"prev_chunk: expected [B, n <= {chunk_size}, <= {action_dim}] with n >= 1, "
                f"got {tuple(prev_chunk.shape)}"
            )
        if batch is not None and prev.shape[0] != batch:
            raise ValueError(f"prev_chunk: batch {prev.shape[0]}, the observation's is {batch}")
        n = prev.shape[1]
        if d > n:
            raise ValueError(f"inference_delay {d} is past the previous chunk's {n} unexecuted actions")
        if not torch.isfinite(prev).all():
            raise ValueError("prev_chunk has non-finite values (nan/inf)")
        target = prev.new_zeros(prev.shape[0], chunk_size, action_dim, dtype=torch.float32)
        target[:, :n, : prev.shape[2]] = prev
        horizon = min(config.execution_horizon, n)  # past the tail there is nothing to merge
        w = prefix_weights(config.prefix_attention_schedule, d, horizon, chunk_size)
        return cls(config, target, w.to(prev.device)[None, :, None], d)

    def to(self, device: torch.device | str) -> RTCGuidance:
        return dataclasses.replace(self, target=self.target.to(device), weights=self.weights.to(device))

    def velocity(self, x_t: torch.Tensor, t: float, velocity: Velocity) -> torch.Tensor:
        """The guided velocity at (x_t, t); `velocity` computes the model's v(x_t) (B, chunk, A)."""
        w = guidance_weight(t, self.config.max_guidance_weight)
        if not self.config.jacobian:
            v = velocity(x_t)
            err = (self.target - (x_t - t * v)) * self.weights  # (B, chunk, A)
            return v - w * err
        with torch.enable_grad():
            x = x_t.detach().clone().requires_grad_(True)  # a clone: x_t may be an inference tensor
            v = velocity(x)
            x1 = x - t * v  # the denoised estimate
            # a constant of the VJP, computed off the graph (target / weights may be inference tensors)
            err = (self.target - x1.detach()) * self.weights
            (correction,) = torch.autograd.grad(x1, x, err)  # (∂x̂₁/∂x_t)ᵀ e, the cache held fixed
        return v.detach() - w * correction
