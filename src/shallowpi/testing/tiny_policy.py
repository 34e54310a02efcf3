"""`save_tiny_policy`: a servable folder with a tiny random-weight π0.5 and its processor (tests, benchmarks);
`random_observation`: a model-ready observation for any config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from shallowpi.data.processor import ProcessorConfig
from shallowpi.data.processor_files import save_processor
from shallowpi.data.tokenizer import load_tokenizer
from shallowpi.model import PiModel, save_model
from shallowpi.model.config import PiConfig, tiny
from shallowpi.observation import Observation


def save_tiny_policy(
    path: str | Path, *, state_dim: int = 8, action_dim: int = 7, seed: int = 0, prefix_student: bool = False
) -> Path:
    """A servable folder with a tiny random-weight π0.5 (56 px, chunk 10) and its processor (tests, benchmarks).

    Cameras as in LeRobot's LIBERO datasets: observation.images.image -> slot 0, .wrist_image -> slot 1,
    slot 2 unfed. Stats differ per dimension so that normalising and unnormalising really do something.
    `prefix_student`: the model is a `tiny_prefix_student` (image tokens merged 2 x 2, a 2-layer tower).
    """
    path = Path(path)
    torch.manual_seed(seed)
    config = tiny("pi05")
    config.tokenizer_max_length = 64  # room for a sentence and an 8-dim state (the prompt must fit)
    if prefix_student:
        from shallowpi.testing.prefix_student import tiny_prefix_student

        model = tiny_prefix_student("pi05", seed=seed, teacher=config)
    else:
        model = PiModel(config).eval()
    config = model.config
    save_model(model, path)
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


def random_observation(
    config: PiConfig, *, batch: int = 2, seed: int = 0, masked_slot: bool = True
) -> Observation:
    """A model-ready observation for `config`: random images in [-1, 1], the last camera slot masked (when
    there are two or more and `masked_slot`), prompts of varying valid length, a random state."""
    g = torch.Generator().manual_seed(seed)
    n, size, length = len(config.cameras), config.vision.image_size, config.tokenizer_max_length
    image_masks = torch.ones(batch, n, dtype=torch.bool)
    if masked_slot and n > 1:
        image_masks[:, -1] = False
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    return Observation(
        images=torch.rand(batch, n, 3, size, size, generator=g) * 2 - 1,  # (B, n_slots, 3, H, W)
        image_masks=image_masks,
        tokens=torch.randint(0, config.vocab_size, (batch, length), generator=g),
        token_masks=torch.arange(length)[None] < lengths[:, None],  # (B, L)
        state=torch.randn(batch, config.max_state_dim, generator=g),
    )
