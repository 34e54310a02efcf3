"""A model-free served policy (`ServedPolicy`, so the same observation checks, frame cap and action contract
as the real backends): wiring checks, tests, server benchmarks.

Its actions are a pure function of the request, so a client can tell which request a reply answers:

    actions[t, d] = mean(state) + 0.001 * t + 0.01 * d          shape (chunk, action_dim), float32

`delay_s` stands in for model time (sleeps in the inference thread, like a model releasing the GIL).
"""

from __future__ import annotations

import time

import numpy as np

from shallowpi.serve.obs_mapping import ObsMapping
from shallowpi.serve.served_policy import ServedPolicy


def expected_actions(state: np.ndarray, chunk: int = 10, action_dim: int = 7) -> np.ndarray:
    """What DummyPolicy answers for this state; tests compare replies against it."""
    t = np.arange(chunk, dtype=np.float32)[:, None]
    d = np.arange(action_dim, dtype=np.float32)[None, :]
    return (
        np.float32(np.mean(state, dtype=np.float32)) + np.float32(0.001) * t + np.float32(0.01) * d
    ).astype(np.float32)


class DummyPolicy(ServedPolicy):
    backend = "dummy"

    def __init__(
        self,
        mapping: ObsMapping | str = "libero",
        # per model slot; None: no camera (every camera named must be fed by the mapping, as for real policies)
        cameras: tuple[str | None, ...] = ("base_0_rgb", "left_wrist_0_rgb", None),
        state_dim: int = 8,
        chunk: int = 10,
        action_dim: int = 7,
        delay_s: float = 0.0,
        default_prompt: str | None = None,
        max_prompt_chars: int = 4096,
    ) -> None:
        super().__init__(
            cameras=cameras,
            state_dim=state_dim,
            action_dim=action_dim,
            chunk_size=chunk,
            obs_mapping=mapping,
            default_prompt=default_prompt,
            name="dummy",
        )
        self.chunk, self.delay_s, self.max_prompt_chars = chunk, delay_s, max_prompt_chars

    @property
    def max_task_chars(self) -> int:
        return self.max_prompt_chars

    def predict(self, sample: dict) -> np.ndarray:
        if self.delay_s:
            time.sleep(self.delay_s)
        return expected_actions(sample["state"], self.chunk, self.action_dim)
