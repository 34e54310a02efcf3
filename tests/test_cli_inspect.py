"""`shallowpi inspect` reports variant, depths, layer map and parameters; bad paths give one clear error."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from shallowpi.model import PiModel, save_model
from shallowpi.model.config import tiny


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "shallowpi", *args], capture_output=True, text=True, timeout=120
    )


def test_inspect_student(tmp_path):
    torch.manual_seed(0)
    model = PiModel(tiny("pi0", depth=2))
    model.config.layer_map = [0, 3]
    save_model(model, tmp_path / "student")
    out = _run("inspect", "--policy", str(tmp_path / "student"), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["variant"] == "pi0" and info["depth"] == {"backbone": 2, "expert": 2}
    assert info["layer_map"] == [0, 3]
    assert info["parameters"]["total"] == model.num_parameters()["total"]
    text = _run("inspect", "--policy", str(tmp_path / "student"))
    assert "layer map: [0, 3]" in text.stdout and "backbone" in text.stdout


def test_inspect_missing_folder(tmp_path):
    out = _run("inspect", "--policy", str(tmp_path / "nope"))
    assert out.returncode == 2
    assert "no config.json" in out.stderr and "Traceback" not in out.stderr
