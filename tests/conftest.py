"""Shared test fixtures: paths to the reference vectors produced by LeRobot 0.4.4."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]


def _find_shared() -> Path:
    for base in (REPO / "shared", REPO.parent / "shared"):
        if (base / "reference").is_dir():
            return base
    raise FileNotFoundError("shared/reference not found beside the repository")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return _find_shared() / "reference"
