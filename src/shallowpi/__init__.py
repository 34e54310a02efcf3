"""shallowpi: depth distillation (Shallow-pi) for pi0 / pi0.5 flow-matching VLA policies.

The torch API below is imported on first use, so torch-free parts (`shallowpi.onnx_runtime`, the server's
protocol code) import on machines without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shallowpi.model.checkpoint import load_model, save_model
    from shallowpi.model.config import PiConfig
    from shallowpi.model.pi import PiModel
    from shallowpi.observation import Observation
    from shallowpi.pretrained import load_processor

_LAZY = {
    "Observation": "shallowpi.observation",
    "PiConfig": "shallowpi.model.config",
    "PiModel": "shallowpi.model.pi",
    "load_model": "shallowpi.model.checkpoint",
    "save_model": "shallowpi.model.checkpoint",
    "load_processor": "shallowpi.pretrained",
}
__all__ = ["Observation", "PiConfig", "PiModel", "load_model", "load_processor", "save_model"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'shallowpi' has no attribute {name!r}")
