"""The ONNX runner imports and runs where torch is not installed: a venv with numpy, onnxruntime and
sentencepiece only (what a robot computer needs), created once and cached (keyed by the three versions)
under ~/.cache/shallowpi (override: SHALLOWPI_CACHE). The first run needs PyPI (about 30 s)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

from onnx_helpers import TEACHER, libero_obs, metaworld_sample
from shallowpi.infer.predictor import ActionPredictor
from shallowpi.onnx_runtime.policy import OnnxPolicy
from shallowpi.onnx_runtime.runner import OnnxRunner

SRC = Path(__file__).resolve().parents[1] / "src"
# The versions this environment runs, so the venv tests the same runtime (and pip reuses its wheel cache).
PACKAGES = [f"{p}=={version(p)}" for p in ("numpy", "onnxruntime", "sentencepiece")]
CACHE = Path(os.environ.get("SHALLOWPI_CACHE", Path.home() / ".cache" / "shallowpi"))
VENV = CACHE / ("onnx-runner-venv-" + "-".join(p.replace("==", "") for p in PACKAGES))
TIMEOUT = 600

SCRIPT = r"""
import json, sys
import numpy as np
try:
    import torch  # noqa: F401
    sys.exit("torch is importable in the runner venv")
except ModuleNotFoundError:
    pass
from shallowpi.onnx_runtime import OnnxRunner
from shallowpi.onnx_runtime.policy import OnnxPolicy

export, inp, out = sys.argv[1:4]
arrays = np.load(inp + "/in.npz")
sample = {"images": {k[4:]: arrays[k] for k in arrays if k.startswith("img/")}, "state": arrays["state"],
          "task": open(inp + "/task.txt").read()}
runner = OnnxRunner(export)
np.save(out + "/actions.npy", runner.predict(sample, noise=arrays["noise"]))
obs = {k[4:]: arrays[k] for k in arrays if k.startswith("obs/")}
obs["prompt"] = sample["task"]
reply = OnnxPolicy(runner, obs_mapping="libero").infer(obs)
np.save(out + "/reply.npy", reply["actions"])
json.dump({"torch_loaded": "torch" in sys.modules, "numpy": np.__version__,
           "shallowpi": sorted(m for m in sys.modules if m.startswith("shallowpi"))}, open(out + "/info.json", "w"))
"""


def runner_python() -> Path:
    """The venv's python, creating the venv once (atomically, under a lock) if it is not cached yet."""
    python = VENV / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "onnx-runner-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (VENV / ".complete").exists():
            return python
        tmp = VENV.with_name(VENV.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, timeout=TIMEOUT)
        pip = [str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, *PACKAGES], check=True, timeout=TIMEOUT)
        shutil.rmtree(VENV, ignore_errors=True)
        tmp.rename(VENV)  # a venv's python finds its site-packages relative to itself
        (VENV / ".complete").write_text("\n".join(PACKAGES) + "\n")
    return python


def test_runner_imports_and_runs_without_torch(teacher_onnx, tmp_path):
    python = runner_python()
    sample, obs = metaworld_sample(4), libero_obs(4)
    predictor = ActionPredictor.from_pretrained(TEACHER, device="cpu")
    noise = predictor.noise(9)
    arrays = {f"img/{k}": v for k, v in sample["images"].items()}
    arrays.update({f"obs/{k}": v for k, v in obs.items() if k != "prompt"})
    np.savez(tmp_path / "in.npz", state=sample["state"], noise=noise.numpy(), **arrays)
    (tmp_path / "task.txt").write_text(sample["task"])
    (tmp_path / "run.py").write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(SRC), "HOME": str(Path.home())}
    proc = subprocess.run(
        [str(python), str(tmp_path / "run.py"), str(teacher_onnx), str(tmp_path), str(out)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((out / "info.json").read_text())
    assert info["torch_loaded"] is False
    assert "shallowpi.onnx_runtime.runner" in info["shallowpi"] and "shallowpi.model" not in info["shallowpi"]
    # Same actions as shallowpi's torch engine with the same noise ...
    np.testing.assert_allclose(
        np.load(out / "actions.npy"), predictor.predict(sample, seed=9), rtol=0, atol=1e-4
    )
    # ... and the served reply is what the same policy gives here (numpy noise from seed 0 on both sides).
    here = OnnxPolicy(OnnxRunner(teacher_onnx), obs_mapping="libero").infer(obs)["actions"]
    np.testing.assert_allclose(np.load(out / "reply.npy"), here, rtol=0, atol=1e-6)
