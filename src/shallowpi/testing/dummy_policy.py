"""A model-free policy with the same observation checks as PiPolicy: wiring checks, tests, server benchmarks.

Its actions are a pure function of the request, so a client can tell which request a reply answers:

    actions[t, d] = mean(state) + 0.001 * t + 0.01 * d          shape (chunk, action_dim), float32

`delay_s` stands in for model time (sleeps in the inference thread, like a model releasing the GIL).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from shallowpi.serve.obs_mapping import (
    ObservationError,
    ObsMapping,
    PreparedObservation,
    get_mapping,
    max_request_bytes,
)


def expected_actions(state: np.ndarray, chunk: int = 10, action_dim: int = 7) -> np.ndarray:
    """What DummyPolicy answers for this state; tests compare replies against it."""
    t = np.arange(chunk, dtype=np.float32)[:, None]
    d = np.arange(action_dim, dtype=np.float32)[None, :]
    return (
        np.float32(np.mean(state, dtype=np.float32)) + np.float32(0.001) * t + np.float32(0.01) * d
    ).astype(np.float32)


@dataclass
class DummyPolicy:
    mapping: ObsMapping | str = "libero"
    cameras: tuple[str, ...] = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
    state_dim: int = 8
    chunk: int = 10
    action_dim: int = 7
    delay_s: float = 0.0
    default_prompt: str | None = None
    max_prompt_chars: int = 4096

    def __post_init__(self) -> None:
        self.mapping = get_mapping(self.mapping)

    @property
    def metadata(self) -> dict:
        assert isinstance(self.mapping, ObsMapping)
        return {
            "policy": "dummy",
            "action_chunk": self.chunk,
            "action_dim": self.action_dim,
            "state_dim": self.state_dim,
            "obs_mapping": self.mapping.describe(self.cameras),
        }

    @property
    def max_request_bytes(self) -> int:
        assert isinstance(self.mapping, ObsMapping)
        fed = len(self.mapping.resolve(self.cameras))
        return max_request_bytes(fed, self.state_dim, self.max_prompt_chars)

    def prepare(self, obs: dict) -> PreparedObservation:
        assert isinstance(self.mapping, ObsMapping)
        sample = self.mapping.extract(obs, self.cameras, self.default_prompt)
        state = sample.get("state", np.zeros(0, np.float32))
        if state.shape != (self.state_dim,):
            raise ObservationError(f"state must have shape ({self.state_dim},), got {state.shape}")
        if len(sample["task"]) > self.max_prompt_chars:
            raise ObservationError(
                f"prompt of {len(sample['task'])} characters (limit {self.max_prompt_chars})"
            )
        return PreparedObservation(sample)

    def infer(self, obs: dict | PreparedObservation) -> dict:
        start = time.monotonic()
        sample = (obs if isinstance(obs, PreparedObservation) else self.prepare(obs)).sample
        state = sample["state"]
        if self.delay_s:
            time.sleep(self.delay_s)
        actions = expected_actions(state, self.chunk, self.action_dim)
        return {"actions": actions, "policy_timing": {"infer_ms": (time.monotonic() - start) * 1e3}}
