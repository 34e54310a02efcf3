"""The real `openpi-client` (PyPI) talks to our server, the way a robot runs it: own process, own venv.

openpi-client 0.1.2 pins numpy<2 while this project uses numpy 2, so the client lives in a small venv
created once and cached (keyed by version) under ~/.cache/shallowpi (override: SHALLOWPI_CACHE). The first
run needs PyPI (about 10 s); later runs reuse it. Everything is loopback (127.0.0.1) and bounded in time.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shallowpi.serve.server import ServerThread
from shallowpi.testing import DummyPolicy, expected_actions

OPENPI_CLIENT = "openpi-client==0.1.2"
# 0.1.2 imports typing_extensions without declaring it; a robot's environment has it from elsewhere.
CLIENT_DEPS = [OPENPI_CLIENT, "typing_extensions"]
CACHE = Path(os.environ.get("SHALLOWPI_CACHE", Path.home() / ".cache" / "shallowpi"))
VENV = CACHE / "openpi-client-venv-0.1.2"
INSTALL_TIMEOUT, CLIENT_TIMEOUT = 600, 180

# Runs inside the client venv (numpy 1.x). Writes what the client saw to OUT: metadata, replies, errors.
CLIENT_SCRIPT = r"""
import json, sys
import numpy as np
from openpi_client.action_chunk_broker import ActionChunkBroker
from openpi_client.websocket_client_policy import WebsocketClientPolicy

port, inp, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
arrays = np.load(inp + "/obs.npz", allow_pickle=False)
spec = json.load(open(inp + "/spec.json"))
obs_list = [{**{k: arrays[f"{i}/{k}"] for k in spec["array_keys"]}, "prompt": p} for i, p in enumerate(spec["prompts"])]

policy = WebsocketClientPolicy(host="127.0.0.1", port=port)
result = {"numpy": np.__version__, "metadata": policy.get_server_metadata(), "reply_keys": []}
for i, obs in enumerate(obs_list):
    reply = policy.infer(obs)
    result["reply_keys"].append(sorted(reply))
    np.save(f"{out}/actions_{i}.npy", reply["actions"])

broker = ActionChunkBroker(policy, action_horizon=5)  # what the LIBERO example runs: one action per step
np.save(f"{out}/broker.npy", np.stack([broker.infer(obs_list[0])["actions"] for _ in range(5)]))

bad = WebsocketClientPolicy(host="127.0.0.1", port=port)
try:
    bad.infer({k: v for k, v in obs_list[0].items() if k != spec["drop_for_error"]})
    result["error"] = None
except RuntimeError as e:
    result["error"] = str(e)
json.dump(result, open(out + "/result.json", "w"))
"""


def client_python() -> Path:
    """The venv's python, creating the venv once (atomically, under a lock) if it is not cached yet."""
    python = VENV / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "openpi-client-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test sessions at once build it only once
        if (VENV / ".complete").exists():
            return python
        tmp = VENV.with_name(VENV.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, timeout=INSTALL_TIMEOUT)
        subprocess.run(
            [
                str(tmp / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                *CLIENT_DEPS,
            ],
            check=True,
            timeout=INSTALL_TIMEOUT,
        )
        shutil.rmtree(VENV, ignore_errors=True)
        tmp.rename(VENV)  # venv python finds its site-packages relative to itself, so a rename is safe
        (VENV / ".complete").write_text(OPENPI_CLIENT + "\n")
    return python


def run_client(port: int, observations: list[dict], drop_for_error: str, tmp_path: Path) -> dict:
    """Runs CLIENT_SCRIPT against 127.0.0.1:port; returns result.json plus the action arrays it saved."""
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    out.mkdir()
    array_keys = [k for k, v in observations[0].items() if isinstance(v, np.ndarray)]
    np.savez(inp / "obs.npz", **{f"{i}/{k}": o[k] for i, o in enumerate(observations) for k in array_keys})
    spec = {
        "array_keys": array_keys,
        "prompts": [o["prompt"] for o in observations],
        "drop_for_error": drop_for_error,
    }
    (inp / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "client.py").write_text(CLIENT_SCRIPT)
    proc = subprocess.run(
        [str(client_python()), str(tmp_path / "client.py"), str(port), str(inp), str(out)],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((out / "result.json").read_text())
    result["actions"] = [np.load(out / f"actions_{i}.npy") for i in range(len(observations))]
    result["broker"] = np.load(out / "broker.npy")
    return result


def libero_obs(seed: int, size: int = 224) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "observation/image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation/state": rng.normal(size=8).astype(np.float32),
        "prompt": f"put the bowl on plate {seed}",
    }


def test_openpi_client_protocol_with_dummy_policy(tmp_path):
    """Handshake, metadata, reply keys, ActionChunkBroker slicing and error reporting, as the client sees them."""
    obs = [libero_obs(0), libero_obs(1)]
    policy = DummyPolicy()
    with ServerThread(policy, host="127.0.0.1", port=0) as srv:
        result = run_client(srv.port, obs, "observation/state", tmp_path)
    assert result["numpy"].startswith("1.")  # really the robot-side numpy, not ours
    assert result["metadata"] == json.loads(json.dumps(policy.metadata))
    assert result["reply_keys"] == [["actions", "policy_timing", "server_timing"]] * 2
    for o, actions in zip(obs, result["actions"], strict=True):
        np.testing.assert_array_equal(actions, expected_actions(o["observation/state"]))
    np.testing.assert_array_equal(result["broker"], expected_actions(obs[0]["observation/state"])[:5])
    assert "Error in inference server" in result["error"]
    assert "missing observation key 'observation/state'" in result["error"]


@pytest.fixture(scope="module")
def tiny_policy_dir(tmp_path_factory) -> Path:
    """A tiny random-weight π0.5 with its processor, saved the way `shallowpi serve --policy` reads it."""
    from shallowpi.testing import save_tiny_policy

    return save_tiny_policy(tmp_path_factory.mktemp("tiny_policy"), state_dim=8, action_dim=7)


def test_openpi_client_gets_what_a_direct_pipolicy_call_gives(tiny_policy_dir, tmp_path):
    from shallowpi.serve.policy import PiPolicy

    policy = PiPolicy.from_pretrained(tiny_policy_dir, device="cpu", obs_mapping="libero")
    obs = [libero_obs(10), libero_obs(11, size=200)]  # a non-square-to-model size: resize-with-pad path
    with ServerThread(policy, host="127.0.0.1", port=0) as srv:
        result = run_client(srv.port, obs, "observation/wrist_image", tmp_path)
    meta = json.loads(json.dumps(policy.metadata))
    assert result["metadata"] == meta and meta["action_dim"] == 7 and meta["action_chunk"] == 10
    for o, actions in zip(obs, result["actions"], strict=True):
        direct = policy.infer(o)["actions"]
        assert actions.shape == direct.shape == (10, 7) and actions.dtype == np.float32
        np.testing.assert_allclose(actions, direct, rtol=0, atol=1e-6)
    assert not np.allclose(result["actions"][0], result["actions"][1])  # the inputs really reach the model
    assert "missing observation key 'observation/wrist_image'" in result["error"]
