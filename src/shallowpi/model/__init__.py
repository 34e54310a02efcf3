"""π0 / π0.5 in plain torch: config, model, checkpoints."""

from shallowpi.model.checkpoint import CheckpointError, load_model, load_state_dict, save_model
from shallowpi.model.config import GemmaConfig, PiConfig, SiglipConfig, preset
from shallowpi.model.pi import JointOutput, PiModel

__all__ = [
    "CheckpointError",
    "GemmaConfig",
    "JointOutput",
    "PiConfig",
    "PiModel",
    "SiglipConfig",
    "load_model",
    "load_state_dict",
    "preset",
    "save_model",
]
