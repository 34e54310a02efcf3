"""Step distillation: a K-step student whose every Euler step matches a frozen target's multi-step solution.

Trajectory (progressive-style) distillation, see docs/step-distillation.md. The student samples along its
own grid 1 = g_0 > g_1 > … > g_K = 0. For each interval [g_k, g_{k+1}] the frozen target (the 18-layer
teacher, or the depth-distilled student itself) integrates its ODE from the interval's start state x_k with
⌈target_steps·(g_k − g_{k+1})⌉ uniform Euler sub-steps; the student's single velocity at (x_k, g_k) is
trained to equal the target's average velocity over the interval,

    v*_k = Σ_j (dt_j / Σ_i dt_i) · v_φ(x_{k,j}, s_{k,j}),   L_trajectory = mean_k ‖v_θ(x_k, g_k) − v*_k‖²,

so one student step lands where the target's sub-steps land. With one sub-step per interval and a student
equal to its target the loss is exactly 0 (the weights are then exactly 1.0 and both sides run the same
cached-prefix code on the same tensors).

Start states x_k: "student" (default) rolls the student's own K steps out (detached between steps), the
states it meets when sampling, so errors of earlier steps are corrected rather than compounded; "target"
takes them from the target's own trajectory. At K = 1 both are the noise ε.

Cost per example: the student's prefix once (with gradient) + K expert passes; the target's prefix once +
about target_steps expert passes (no gradient). The data's actions are not used: only observations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from shallowpi.distill.data import Batch
from shallowpi.distill.losses import action_error
from shallowpi.errors import UserError
from shallowpi.model import PiModel
from shallowpi.model.config import check_time_grid, euler_steps, uniform_time_grid
from shallowpi.model.inputs import check_inputs

States = Literal["student", "target"]


@dataclass
class StepWeights:
    # The term is "trajectory", not "step": the trainer's metrics records already use "step" for the step.
    trajectory: float = 1.0


@dataclass
class StepDistillConfig:
    grid: Sequence[float]  # the student's K-step time grid, 1.0 ... 0.0
    target_steps: int = 10  # target Euler steps over [1, 0] (the frozen 10-step sampler)
    states: States = "student"
    weights: StepWeights = field(default_factory=StepWeights)
    action_dim: int | None = None  # dataset action dim; None = all max_action_dim dims

    def __post_init__(self) -> None:
        if isinstance(self.weights, dict):
            self.weights = StepWeights(**self.weights)
        self.grid = check_time_grid(self.grid)
        if self.target_steps < 1:
            raise UserError(f"target_steps must be >= 1, got {self.target_steps}")
        if self.states not in ("student", "target"):
            raise UserError(f"states must be 'student' or 'target', got {self.states!r}")
        if self.weights.trajectory <= 0:
            raise UserError(f"the trajectory loss weight must be > 0, got {self.weights.trajectory}")

    @property
    def num_steps(self) -> int:
        return len(self.grid) - 1

    def sub_grid(self, k: int) -> list[float]:
        """The target's Euler grid over the student's interval k (the uniform target grid on [1, 0])."""
        t0, t1 = self.grid[k], self.grid[k + 1]
        n = max(1, math.ceil(self.target_steps * (t0 - t1) - 1e-9))
        if (t0, t1) == (1.0, 0.0):
            return uniform_time_grid(n)
        return [t0 + (t1 - t0) * j / n for j in range(n)] + [t1]


@dataclass
class _Cached:
    """A model's prefix over one batch: KV cache, validity, suffix RoPE and mask, the (π0) state."""

    cache: list[tuple[torch.Tensor, torch.Tensor]]
    valid: torch.Tensor
    rope: tuple[torch.Tensor, torch.Tensor]
    mask: torch.Tensor
    state: torch.Tensor | None

    def velocity(self, model: PiModel, x: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)
        return model.denoise_step(self.cache, self.valid, x, tt, self.state, self.rope, self.mask)


def _prefix(model: PiModel, batch: Batch) -> _Cached:
    obs = check_inputs(model.config, batch.observation)
    embs, valid = model.embed_prefix(obs)
    cache = model.prefix_cache(embs, valid)
    rope, mask = model.suffix_rope_and_mask(valid, *model.suffix_layout(valid.shape[0], valid.device))
    return _Cached(cache, valid, rope, mask, obs.state)


class StepForward(nn.Module):
    """The student's differentiable K-step pass (what DDP wraps): its prefix once, one expert pass per
    interval. -> (velocities, start states), each (K, B, chunk, max_action_dim).

    `states` None: the student's own rollout, detached between steps; else the given start states (K, B, ...).
    """

    def __init__(self, model: PiModel, grid: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.steps = euler_steps(check_time_grid(grid))

    def forward(self, batch: Batch, states: torch.Tensor | None = None):
        pre = _prefix(self.model, batch)
        x = pad_noise(self.model, batch.noise)
        vs, xs = [], []
        for k, (t, dt) in enumerate(self.steps):
            if states is not None:
                x = states[k]
            v = pre.velocity(self.model, x, t)
            vs.append(v)
            xs.append(x)
            x = (x + dt * v).detach()
        return torch.stack(vs), torch.stack(xs)


def pad_noise(model: PiModel, noise: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(noise.float(), (0, model.config.max_action_dim - noise.shape[-1]))


class StepDistillLoss:
    """λ · L_trajectory (module docstring); `student_forward` is a StepForward, or DDP around one."""

    def __init__(self, student: PiModel, teacher: PiModel | None, config: StepDistillConfig) -> None:
        if teacher is None:
            raise ValueError(
                "step distillation needs a frozen target model (the teacher or the L-layer student)"
            )
        for name in ("variant", "chunk_size", "max_action_dim", "cameras"):
            a, b = getattr(student.config, name), getattr(teacher.config, name)
            if a != b:
                raise UserError(f"student and target differ in {name}: {a!r} vs {b!r}")
        self.student, self.teacher, self.config = student, teacher, config

    def forward_module(self, student: PiModel) -> StepForward:
        return StepForward(student, self.config.grid)

    @torch.no_grad()
    def targets(self, batch: Batch, starts: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Target average velocity of every interval -> (v*, start states), (K, B, chunk, max_action_dim).
        `starts` None: the target's own trajectory from the noise gives the start states."""
        self.teacher.eval()
        pre = _prefix(self.teacher, batch)
        x = pad_noise(self.teacher, batch.noise)
        vs, xs = [], []
        for k in range(self.config.num_steps):
            if starts is not None:
                x = starts[k]
            xs.append(x)
            steps = euler_steps(self.config.sub_grid(k))
            span = sum(dt for _, dt in steps)
            v_avg = torch.zeros_like(x)
            for t, dt in steps:
                v = pre.velocity(self.teacher, x, t)
                v_avg = v_avg + (dt / span) * v  # weight exactly 1.0 for a single sub-step
                x = x + dt * v
            vs.append(v_avg)
        return torch.stack(vs), torch.stack(xs)

    def __call__(self, student_forward, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.config.states == "target":
            v_target, starts = self.targets(batch, None)
            v_s, _ = student_forward(batch, starts)
        else:
            v_s, starts = student_forward(batch, None)
            v_target, _ = self.targets(batch, starts.detach())
        err = (v_s.float() - v_target.float()).pow(2).flatten(0, 1)  # (K*B, chunk, max_action_dim)
        # The targets are the model's own outputs, not data: no chunk step is padding.
        terms = {"trajectory": action_error(err, self.config.action_dim, None)}
        return self.config.weights.trajectory * terms["trajectory"], terms


__all__ = ["StepDistillConfig", "StepDistillLoss", "StepForward", "StepWeights"]
