"""Shallow-π in one call: the front door's `distill_student(student, teacher, data, cfg)`.

`trainer.train` is the general loop (any loss stage, resume, write_extra); this names the common case and
returns what a user loads next: the final `pretrained_model` folder, processor included.
"""

from __future__ import annotations

from pathlib import Path

from shallowpi.distill.checkpointing import PRETRAINED
from shallowpi.distill.losses import DistillLossConfig
from shallowpi.distill.source import DatasetSource
from shallowpi.distill.trainer import TrainConfig, train
from shallowpi.model import PiModel


def distill_student(
    student: PiModel,
    teacher: PiModel,
    data: DatasetSource,
    cfg: TrainConfig,
    losses: DistillLossConfig | None = None,
    *,
    resume: bool = False,
) -> Path:
    """Train `student` (in place) with the task loss, velocity KD and attention KD against the frozen
    `teacher` (`losses` picks weights and layers; default λ = 1, 1, 1 at the middle layer) on `data`
    (`dataset_source`); returns the last checkpoint's pretrained_model folder."""
    last = train(
        student,
        data,
        cfg,
        losses or DistillLossConfig(),
        teacher=teacher,
        resume=resume,
        write_extra=data.save_processor,
    )
    return Path(last) / PRETRAINED


__all__ = ["distill_student"]
