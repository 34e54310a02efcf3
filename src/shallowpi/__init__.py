"""shallowpi: depth distillation (Shallow-pi) for pi0 / pi0.5 flow-matching VLA policies."""

from shallowpi.model.checkpoint import load_model, save_model
from shallowpi.model.config import PiConfig
from shallowpi.model.pi import PiModel

__all__ = ["PiConfig", "PiModel", "load_model", "save_model"]
__version__ = "0.1.0"
