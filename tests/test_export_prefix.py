"""ONNX export of a prefix-compressed student (image tokens merged 2 x 2, a shallower SigLIP tower): the
graphs give the engine's actions, the manifest says what was compressed, and the onnxruntime runner runs the
export where torch cannot be imported."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shallowpi.infer.engine import InferenceEngine
from shallowpi.testing import random_observation, tiny_prefix_student

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")), reason="needs the export extra"
)
TOL = 1e-4
SRC = Path(__file__).resolve().parents[1] / "src"
NO_TORCH = """
import sys
sys.modules["torch"] = None  # every import of torch fails
import numpy as np
from shallowpi.onnx_runtime.runner import OnnxRunner
export, arrays, out = sys.argv[1:4]
x = np.load(arrays)
state = x["state"] if "state" in x else None
np.save(out, OnnxRunner(export).sample(x["images"], x["image_masks"], x["tokens"], x["token_masks"], state,
                                       noise=x["noise"]))
"""


def _export(variant: str, out: Path):
    from shallowpi.export.onnx_export import ExportOptions, export_onnx

    model = tiny_prefix_student(variant)
    cfg = model.config
    obs = random_observation(
        cfg, batch=1, seed=1
    )  # slot 2 masked: exported without it, as the engine skips it
    noise = torch.randn(1, cfg.chunk_size, cfg.max_action_dim, generator=torch.Generator().manual_seed(2))
    export = export_onnx(model, out, ExportOptions(cameras=tuple(cfg.cameras[:2])))
    ref = InferenceEngine(model, batch_size=1).sample_actions(obs, noise=noise).numpy()
    arrays = {
        "images": obs.images[:, :2].numpy(),  # (1, 2, 3, H, W)
        "image_masks": obs.image_masks[:, :2].numpy(),
        "tokens": obs.tokens.numpy(),
        "token_masks": obs.token_masks.numpy(),
        "noise": noise.numpy(),
    }
    if variant == "pi0":
        arrays["state"] = obs.state.numpy()
    return model, export, arrays, ref


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_export_equals_the_engine_and_records_the_prefix(variant: str, tmp_path: Path) -> None:
    from shallowpi.onnx_runtime.runner import OnnxRunner

    model, export, x, ref = _export(variant, tmp_path / "onnx")
    runner = OnnxRunner(export)
    out = runner.sample(
        x["images"], x["image_masks"], x["tokens"], x["token_masks"], x.get("state"), noise=x["noise"]
    )
    assert np.abs(out - ref).max() < TOL
    m = json.loads((export / "manifest.json").read_text())["model"]
    cfg = model.config
    assert (m["num_patches"], m["image_tokens"], m["image_merge"]) == (16, 4, 2)
    assert m["vision_depth"] == 2 and m["vision_layer_map"] == [0, 2]
    assert m["prefix_length"] == 2 * 4 + cfg.tokenizer_max_length
    assert runner.manifest.spec("prefix", "outputs", "prefix_mask").shape[1] == m["prefix_length"]


def test_runner_runs_the_student_export_without_torch(tmp_path: Path) -> None:
    _, export, x, ref = _export("pi05", tmp_path / "onnx")
    np.savez(tmp_path / "in.npz", **x)
    (tmp_path / "run.py").write_text(NO_TORCH)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(SRC), "HOME": str(Path.home())}
    proc = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "run.py"),
            str(export),
            str(tmp_path / "in.npz"),
            str(tmp_path / "o.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert np.abs(np.load(tmp_path / "o.npy") - ref).max() < TOL
