"""shallowpi: depth distillation (Shallow-pi) for pi0 / pi0.5 flow-matching VLA policies.

The front door, a dozen lines from a teacher to an exported student (README, "Python"):

    import shallowpi as sp
    teacher = sp.load_model("lerobot/pi05_base")                      # a folder or a hub id
    student = sp.make_student(teacher, depth=6)
    data = sp.dataset_source("org/dataset", teacher.config, processor="lerobot/pi05_base")
    folder = sp.distill_student(student, teacher, data, sp.TrainConfig(output_dir="out/l6", steps=30000))
    chunk = sp.ActionPredictor.from_pretrained(folder).predict(raw_observation)
    sp.export_policy(folder, "out/l6_onnx")

Everything is imported on first use, so torch-free parts (`shallowpi.onnx_runtime`, the server's protocol
code) import on machines without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shallowpi.distill.losses import DistillLossConfig, LossWeights
    from shallowpi.distill.recipes import distill_student
    from shallowpi.distill.source import dataset_source
    from shallowpi.distill.student import make_student
    from shallowpi.distill.trainer import TrainConfig, train
    from shallowpi.export.onnx_export import export_policy
    from shallowpi.infer.engine import InferenceEngine
    from shallowpi.infer.predictor import ActionPredictor
    from shallowpi.model.checkpoint import load_model, save_model
    from shallowpi.model.config import PiConfig, preset
    from shallowpi.model.pi import PiModel
    from shallowpi.observation import Observation
    from shallowpi.onnx_runtime.runner import OnnxRunner
    from shallowpi.pretrained import load_processor
    from shallowpi.sim.evaluate import EvalConfig, evaluate

_LAZY = {
    # models and checkpoints
    "Observation": "shallowpi.observation",
    "PiConfig": "shallowpi.model.config",
    "PiModel": "shallowpi.model.pi",
    "preset": "shallowpi.model.config",
    "load_model": "shallowpi.model.checkpoint",
    "save_model": "shallowpi.model.checkpoint",
    "load_processor": "shallowpi.pretrained",
    # distillation
    "make_student": "shallowpi.distill.student",
    "dataset_source": "shallowpi.distill.source",
    "TrainConfig": "shallowpi.distill.trainer",
    "train": "shallowpi.distill.trainer",
    "DistillLossConfig": "shallowpi.distill.losses",
    "LossWeights": "shallowpi.distill.losses",
    "distill_student": "shallowpi.distill.recipes",
    # inference, evaluation, export
    "ActionPredictor": "shallowpi.infer.predictor",
    "InferenceEngine": "shallowpi.infer.engine",
    "EvalConfig": "shallowpi.sim.evaluate",
    "evaluate": "shallowpi.sim.evaluate",
    "export_policy": "shallowpi.export.onnx_export",
    "OnnxRunner": "shallowpi.onnx_runtime.runner",
}
__all__ = [
    "ActionPredictor",
    "DistillLossConfig",
    "EvalConfig",
    "InferenceEngine",
    "LossWeights",
    "Observation",
    "OnnxRunner",
    "PiConfig",
    "PiModel",
    "TrainConfig",
    "dataset_source",
    "distill_student",
    "evaluate",
    "export_policy",
    "load_model",
    "load_processor",
    "make_student",
    "preset",
    "save_model",
    "train",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'shallowpi' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
