"""`tiny_prefix_student`: a tiny random student with a compressed prefix (merged image tokens, a shallower
SigLIP tower), made the way `shallowpi distill --image-merge --vision-layers` makes one, for the checks that
every runtime runs such a student."""

from __future__ import annotations

import dataclasses

import torch

from shallowpi.distill.student import make_student
from shallowpi.model import PiModel
from shallowpi.model.config import PiConfig, tiny


def tiny_prefix_student(
    variant: str = "pi05",
    *,
    seed: int = 0,
    depth: int = 2,
    merge: int = 2,
    vision_depth: int = 2,
    teacher: PiConfig | None = None,
) -> PiModel:
    """A student of a random tiny teacher (`teacher`, default `tiny(variant)` with a 3-layer SigLIP tower):
    `depth` layers, image tokens merged `merge` x `merge` (56 px / patch 14: 16 -> 4 tokens per camera at 2),
    `vision_depth` SigLIP layers. Every weight is perturbed afterwards (random adaRMS denses and norms, and a
    projector that is no longer the teacher's group mean), so that no path's mistake can hide behind zeros."""
    cfg = teacher or tiny(variant)
    cfg = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, depth=max(3, vision_depth)))
    torch.manual_seed(seed)
    student = make_student(PiModel(cfg), depth=depth, merge=merge, vision_depth=vision_depth)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p), alpha=0.1)
    return student.eval()
