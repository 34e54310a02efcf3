"""Learning rate: linear warmup then cosine decay (openpi / LeRobot π0 defaults, docs/method.md §4)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from shallowpi.errors import UserError


@dataclass
class ScheduleConfig:
    peak_lr: float = 2.5e-5
    warmup_steps: int = 1000
    decay_steps: int | None = None  # step at which the cosine reaches end_lr; None = the run's total steps
    end_lr: float = 2.5e-6

    def __post_init__(self) -> None:
        if not (math.isfinite(self.peak_lr) and self.peak_lr > 0):
            raise UserError(f"peak_lr (--lr) must be a finite number > 0, got {self.peak_lr}")
        if not (math.isfinite(self.end_lr) and self.end_lr >= 0):
            raise UserError(f"end_lr (--end-lr) must be a finite number >= 0, got {self.end_lr}")
        if self.warmup_steps < 0:
            raise UserError(f"warmup_steps (--warmup-steps) must be >= 0, got {self.warmup_steps}")
        if self.decay_steps is not None and self.decay_steps < 1:
            raise UserError(f"decay_steps (--decay-steps) must be >= 1, got {self.decay_steps}")


def lr_at(step: int, cfg: ScheduleConfig, total_steps: int) -> float:
    """LR for optimizer step `step` (0-based). Warmup rises linearly from peak/(warmup+1) to peak (so the
    first step is not at lr 0), then a half cosine goes from peak to end_lr at decay_steps and stays there."""
    decay = cfg.decay_steps if cfg.decay_steps is not None else total_steps
    if step < cfg.warmup_steps:
        return cfg.peak_lr * (step + 1) / (cfg.warmup_steps + 1)
    span = max(decay - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.end_lr + (cfg.peak_lr - cfg.end_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR whose state (last_epoch = steps taken) is all that a checkpoint needs to store."""
    if cfg.peak_lr <= 0:
        raise UserError(f"peak learning rate must be > 0, got {cfg.peak_lr}")
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = cfg.peak_lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, cfg, total_steps) / cfg.peak_lr)
