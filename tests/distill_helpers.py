"""Small models and data shared by the distillation tests."""

from __future__ import annotations

import torch

from shallowpi.distill.data import Batch, MicroBatches, StreamPlan, SyntheticSource, to_batch
from shallowpi.model import PiModel
from shallowpi.model.config import tiny


def random_teacher(variant: str = "pi05", depth: int = 4, seed: int = 0) -> PiModel:
    """A tiny model with every tensor random (zero-initialised norms/adaRMS included, so layers differ)."""
    torch.manual_seed(seed)
    model = PiModel(tiny(variant, depth))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def synthetic_batch(model: PiModel, batch: int = 4, seed: int = 0) -> Batch:
    src = SyntheticSource(model.config, num_samples=16, seed=seed)
    d = MicroBatches(src, StreamPlan(16, batch, seed=seed), model.config, 0, 1)[0]
    return to_batch(d, model.config.variant)
