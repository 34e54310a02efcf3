"""`save_tiny_policy`: a servable folder with a tiny random-weight π0.5 and its processor (tests, benchmarks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from shallowpi.data.processor import ProcessorConfig
from shallowpi.data.processor_files import save_processor
from shallowpi.data.tokenizer import load_tokenizer
from shallowpi.model import PiModel, save_model
from shallowpi.model.config import tiny


def save_tiny_policy(path: str | Path, *, state_dim: int = 8, action_dim: int = 7, seed: int = 0) -> Path:
    """A servable folder with a tiny random-weight π0.5 (56 px, chunk 10) and its processor (tests, benchmarks).

    Cameras as in LeRobot's LIBERO datasets: observation.images.image -> slot 0, .wrist_image -> slot 1,
    slot 2 unfed. Stats differ per dimension so that normalising and unnormalising really do something.
    """
    path = Path(path)
    torch.manual_seed(seed)
    config = tiny("pi05")
    config.tokenizer_max_length = 64  # room for a sentence and an 8-dim state (the prompt must fit)
    save_model(PiModel(config).eval(), path)
    cams = config.cameras
    proc = ProcessorConfig(
        variant="pi05",
        camera_map={"observation.images.image": cams[0], "observation.images.wrist_image": cams[1]},
        cameras=cams,
        image_size=config.vision.image_size,
        max_state_dim=config.max_state_dim,
        max_action_dim=config.max_action_dim,
        chunk_size=config.chunk_size,
        tokenizer_max_length=config.tokenizer_max_length,
    )

    def vec_stats(dim: int) -> dict[str, np.ndarray]:
        i = np.arange(dim, dtype=np.float64)
        return {"mean": 0.1 * i, "std": 1.0 + 0.1 * i, "q01": -1.0 - 0.1 * i, "q99": 1.0 + 0.3 * i}

    stats = {"observation.state": vec_stats(state_dim), "action": vec_stats(action_dim)}
    save_processor(path, proc, stats, load_tokenizer())
    return path
