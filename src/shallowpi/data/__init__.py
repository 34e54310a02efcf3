"""Data: LeRobotDataset reader/writer, normalisation stats, transforms, prompts, tokenizer, processors.

The names below are imported on first use: most of this layer needs torch, but `processor_spec` (the
processor rules the torch-free ONNX runner shares) must import without it, and importing a submodule runs
this file first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shallowpi.data.lerobot_dataset import DatasetFormatError, LeRobotDataset
    from shallowpi.data.processor import (
        Postprocessor,
        Preprocessor,
        ProcessorConfig,
        collate,
        collate_actions,
    )
    from shallowpi.data.processor_files import read_shallowpi_processor, save_processor
    from shallowpi.data.quantiles import add_quantiles
    from shallowpi.data.stats import load_stats
    from shallowpi.data.tokenizer import Tokenizer, load_tokenizer
    from shallowpi.data.video import VideoDecodeError
    from shallowpi.data.video_encoder import VideoSpec
    from shallowpi.data.writer import LeRobotDatasetWriter

_LAZY = {
    "DatasetFormatError": "shallowpi.data.lerobot_dataset",
    "LeRobotDataset": "shallowpi.data.lerobot_dataset",
    "LeRobotDatasetWriter": "shallowpi.data.writer",
    "Postprocessor": "shallowpi.data.processor",
    "Preprocessor": "shallowpi.data.processor",
    "ProcessorConfig": "shallowpi.data.processor",
    "Tokenizer": "shallowpi.data.tokenizer",
    "VideoDecodeError": "shallowpi.data.video",
    "VideoSpec": "shallowpi.data.video_encoder",
    "add_quantiles": "shallowpi.data.quantiles",
    "collate": "shallowpi.data.processor",
    "collate_actions": "shallowpi.data.processor",
    "load_stats": "shallowpi.data.stats",
    "load_tokenizer": "shallowpi.data.tokenizer",
    "read_shallowpi_processor": "shallowpi.data.processor_files",
    "save_processor": "shallowpi.data.processor_files",
}
__all__ = [
    "DatasetFormatError",
    "LeRobotDataset",
    "LeRobotDatasetWriter",
    "Postprocessor",
    "Preprocessor",
    "ProcessorConfig",
    "Tokenizer",
    "VideoDecodeError",
    "VideoSpec",
    "add_quantiles",
    "collate",
    "collate_actions",
    "load_stats",
    "load_tokenizer",
    "read_shallowpi_processor",
    "save_processor",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'shallowpi.data' has no attribute {name!r}")
