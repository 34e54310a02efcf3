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
    assert "image tokens per camera: 16 from SigLIP, 16 to the backbone\n" in text.stdout
    assert "vision tower: 2 layers, not subsampled" in text.stdout


def test_inspect_missing_folder(tmp_path):
    out = _run("inspect", "--policy", str(tmp_path / "nope"))
    assert out.returncode == 2
    assert "no config.json" in out.stderr and "Traceback" not in out.stderr


def test_inspect_prefix_student(tmp_path):
    """Image tokens per camera (SigLIP's and the backbone's) and the subsampled vision tower."""
    from shallowpi.testing import tiny_prefix_student

    save_model(tiny_prefix_student("pi05"), tmp_path / "student")
    info = json.loads(_run("inspect", "--policy", str(tmp_path / "student"), "--json").stdout)
    assert info["image_tokens"] == {"siglip": 16, "backbone": 4, "merge": 2}
    assert info["vision_depth"] == 2 and info["vision_layer_map"] == [0, 2]
    text = _run("inspect", "--policy", str(tmp_path / "student")).stdout
    assert "image tokens per camera: 16 from SigLIP, 4 to the backbone (merged 2x2)" in text
    assert "vision tower: 2 layers, teacher layers [0, 2]" in text
