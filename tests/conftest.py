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
def teacher_onnx(tmp_path_factory) -> Path:
    """The bundled Meta-World teacher exported to ONNX (fp32, batch 1); shared by the export/runner tests."""
    from onnx_helpers import TEACHER
    from shallowpi.export.onnx_export import export_policy

    return export_policy(TEACHER, tmp_path_factory.mktemp("onnx") / "teacher")
