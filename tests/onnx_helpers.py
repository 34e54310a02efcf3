"""Shared inputs of the ONNX export / runner tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TEACHER = Path(__file__).resolve().parents[1] / "src" / "shallowpi" / "assets" / "teacher_metaworld"
# What the tests expect of the bundle comes from its own processor, not from one bundle's numbers.
_PROCESSOR = json.loads((TEACHER / "shallowpi_processor.json").read_text())["config"]
STATE_DIM: int = _PROCESSOR["state_dim"]
PROMPT_LENGTH: int = _PROCESSOR["tokenizer_max_length"]
ACTION_NORM: str = _PROCESSOR["action_norm"]
CAMERAS = ("observation.images.corner4", "observation.images.gripperPOV")  # the teacher's processor cameras


def metaworld_sample(seed: int, height: int = 480, width: int = 640) -> dict:
    """A raw processor sample for the teacher: one non-square camera (resize-with-pad) and one at 64 px."""
    rng = np.random.default_rng(seed)
    return {
        "images": {
            CAMERAS[0]: rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
            CAMERAS[1]: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        },
        "state": rng.normal(size=STATE_DIM).astype(np.float32),
        "task": f"reach the goal {seed}",
    }


def libero_obs(seed: int) -> dict:
    """The same as an openpi LIBERO client sends it (the teacher's cameras feed slots 0 and 1)."""
    s = metaworld_sample(seed)
    return {
        "observation/image": s["images"][CAMERAS[0]],
        "observation/wrist_image": s["images"][CAMERAS[1]],
        "observation/state": s["state"],
        "prompt": s["task"],
    }
