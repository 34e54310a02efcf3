"""Shared test fixtures (paths to the reference vectors produced by LeRobot 0.4.4) and the `cuda` marker:
tests that need a GPU are deselected, with a line saying so, where torch sees none (`--collect-only` still
lists them: benchmarks/gpu_check.sh --dry-run checks that they import)."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before any test module imports mujoco: headless rendering
from pathlib import Path

import pytest
import torch

from paths import find_reference

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return find_reference()


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny ops gain nothing from threads, and on a loaded 2-core machine
    OpenMP threads of tiny ops mostly wait for each other (10x slower seen)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_CUDA_DESELECTED = pytest.StashKey[int]()


@pytest.hookimpl(trylast=True)  # after -m / -k selection: count only what would otherwise run
def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available() or config.option.collectonly:  # listing them runs nothing: keep them
        return
    cuda = [item for item in items if item.get_closest_marker("cuda")]
    if cuda:
        config.hook.pytest_deselected(items=cuda)
        items[:] = [item for item in items if not item.get_closest_marker("cuda")]
    config.stash[_CUDA_DESELECTED] = len(cuda)


def pytest_terminal_summary(terminalreporter, config):
    n = config.stash.get(_CUDA_DESELECTED, 0)
    if n:
        terminalreporter.write_line(
            f"{n} cuda test(s) deselected: no CUDA device (torch.cuda.is_available() is False); "
            "run benchmarks/gpu_check.sh on a GPU machine"
        )


@pytest.fixture(scope="session")
def teacher_onnx(tmp_path_factory) -> Path:
    """The bundled Meta-World teacher exported to ONNX (fp32, batch 1); shared by the export/runner tests."""
    from onnx_helpers import TEACHER
    from shallowpi.export.onnx_export import export_policy

    return export_policy(TEACHER, tmp_path_factory.mktemp("onnx") / "teacher")


def _lerobot(version: str):
    from lerobot_helpers import LeRobot
    from lerobot_venv import ensure, python_for

    if python_for(version) is None:
        pytest.skip(f"LeRobot {version} needs Python >= 3.12 and none was found (set $SHALLOWPI_PY312)")
    return LeRobot(version, ensure(version))


@pytest.fixture(scope="session", params=["0.4.4", "0.6.1"])
def lerobot(request):
    """The real LeRobot, each release in its own venv with this checkout's shallowpi + plugin (built once,
    cached: tests/lerobot_venv.py); tests that take it run against both."""
    return _lerobot(request.param)


@pytest.fixture(scope="session")
def lerobot061():
    """LeRobot 0.6.1 only (what 0.4.4 cannot do: build its π policies, fine-tune them)."""
    return _lerobot("0.6.1")
