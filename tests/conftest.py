"""Shared test fixtures: paths to the reference vectors produced by LeRobot 0.4.4."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from paths import find_reference

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return find_reference()


@pytest.fixture(scope="session")
def lerobot_python() -> Path:
    """python of the real LeRobot 0.4.4 venv with this checkout's shallowpi + plugin (built once, cached)."""
    from lerobot_venv import ensure

    return ensure()
