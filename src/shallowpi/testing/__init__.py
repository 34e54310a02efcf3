"""Test doubles that tests, benchmarks and wiring checks share (not used by any command).

    DummyPolicy          a model-free ServedPolicy: the real backends' checks (server tests, load benchmark)
    expected_actions     what DummyPolicy answers for a state
    save_tiny_policy     a servable folder: tiny random-weight π0.5 + processor
    random_observation   a model-ready Observation for any PiConfig
    tiny_prefix_student  a tiny student with merged image tokens and a shallower SigLIP tower

`save_tiny_policy`, `random_observation` and `tiny_prefix_student` (torch) are imported on first use, so the dummy policy stays usable without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shallowpi.testing.dummy_policy import DummyPolicy, expected_actions

if TYPE_CHECKING:
    from shallowpi.testing.prefix_student import tiny_prefix_student
    from shallowpi.testing.tiny_policy import random_observation, save_tiny_policy

__all__ = ["DummyPolicy", "expected_actions", "random_observation", "save_tiny_policy", "tiny_prefix_student"]


def __getattr__(name: str):
    if name in ("save_tiny_policy", "random_observation"):
        from shallowpi.testing import tiny_policy

        return getattr(tiny_policy, name)
    if name == "tiny_prefix_student":
        from shallowpi.testing.prefix_student import tiny_prefix_student

        return tiny_prefix_student
    raise AttributeError(f"module 'shallowpi.testing' has no attribute {name!r}")
