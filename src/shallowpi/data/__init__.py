"""Data: LeRobotDataset reader/writer, normalisation stats, transforms, prompts, tokenizer, processors."""

from shallowpi.data.lerobot_dataset import DatasetFormatError, LeRobotDataset
from shallowpi.data.processor import (
    Postprocessor,
    Preprocessor,
    ProcessorConfig,
    collate,
    model_inputs,
    read_processor,
    save_processor,
)
from shallowpi.data.quantiles import add_quantiles
from shallowpi.data.stats import load_stats
from shallowpi.data.tokenizer import Tokenizer, load_tokenizer
from shallowpi.data.video import VideoDecodeError
from shallowpi.data.writer import LeRobotDatasetWriter, VideoSpec

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
    "load_stats",
    "load_tokenizer",
    "model_inputs",
    "read_processor",
    "save_processor",
]
