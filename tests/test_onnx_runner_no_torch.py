"""The ONNX runner, its served policy and the server import and run where torch is not installed: a venv
with numpy, onnxruntime, sentencepiece, websockets and msgpack only (what a robot computer needs), created
once and cached (keyed by those versions) under ~/.cache/shallowpi (override: SHALLOWPI_CACHE). The first
run needs PyPI (about 30 s). The same script also runs here with `import torch` made to fail (no PyPI, a
few seconds)."""

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
# websockets + msgpack: the server (`serve --backend onnxruntime`) runs there too.
PACKAGES = [f"{p}=={version(p)}" for p in ("numpy", "onnxruntime", "sentencepiece", "websockets", "msgpack")]
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
policy = OnnxPolicy(runner, obs_mapping="libero")
reply = policy.infer(policy.prepare(obs))  # as the server calls it
np.save(out + "/reply.npy", reply["actions"])
from shallowpi.serve.server import PolicyServer
json.dump({"torch_loaded": sys.modules.get("torch") is not None, "numpy": np.__version__,
           "frame_cap": PolicyServer(policy, port=0).max_frame_bytes, "max_request_bytes": policy.max_request_bytes,
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


def _run(python: str | Path, teacher_onnx: Path, tmp_path: Path, prelude: str = "") -> dict:
    """SCRIPT under `python` on a teacher sample; checks its actions and reply against this process's."""
    sample, obs = metaworld_sample(4), libero_obs(4)
    predictor = ActionPredictor.from_pretrained(TEACHER, device="cpu")
    noise = predictor.noise(9)
    arrays = {f"img/{k}": v for k, v in sample["images"].items()}
    arrays.update({f"obs/{k}": v for k, v in obs.items() if k != "prompt"})
    np.savez(tmp_path / "in.npz", state=sample["state"], noise=noise.numpy(), **arrays)
    (tmp_path / "task.txt").write_text(sample["task"])
    (tmp_path / "run.py").write_text(prelude + SCRIPT)
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
    here = OnnxPolicy(OnnxRunner(teacher_onnx), obs_mapping="libero")
    np.testing.assert_allclose(np.load(out / "reply.npy"), here.infer(obs)["actions"], rtol=0, atol=1e-6)
    # The server's frame cap is the policy's largest request, not the 16 MiB fallback.
    assert info["frame_cap"] == info["max_request_bytes"] == here.max_request_bytes < 16 * 2**20
    return info


def test_runner_imports_and_runs_without_torch(teacher_onnx, tmp_path):
    _run(runner_python(), teacher_onnx, tmp_path)


def test_runner_and_server_run_with_torch_blocked(teacher_onnx, tmp_path):
    """The same path here, with every `import torch` failing: no PyPI needed."""
    info = _run(sys.executable, teacher_onnx, tmp_path, prelude='import sys\nsys.modules["torch"] = None\n')
    assert (
        "shallowpi.data.processor_spec" in info["shallowpi"]
        and "shallowpi.data.processor" not in info["shallowpi"]
    )
