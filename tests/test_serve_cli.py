"""`shallowpi serve --policy PATH`: starts, answers /healthz and a robot request, stops cleanly on SIGTERM."""

from __future__ import annotations

import numpy as np
from websockets.sync.client import connect

from serve_process import serving
from shallowpi.serve import msgpack_numpy
from shallowpi.serve.policy import PiPolicy
from shallowpi.testing import save_tiny_policy


def test_serve_command_end_to_end(tmp_path):
    policy_dir = save_tiny_policy(tmp_path / "tiny", state_dim=8, action_dim=7)
    args = [
        "--policy",
        str(policy_dir),
        "--device",
        "cpu",
        "--num-steps",
        "2",
        "--default-prompt",
        "pick up the bowl",
    ]
    with serving(args) as port:
        rng = np.random.default_rng(0)
        obs = {  # no "prompt": the server's --default-prompt is used
            "observation/image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
            "observation/wrist_image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
            "observation/state": rng.normal(size=8).astype(np.float32),
        }
        with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None, open_timeout=30) as ws:
            metadata = msgpack_numpy.unpackb(ws.recv(timeout=30))
            ws.send(msgpack_numpy.packb(obs))
            reply = msgpack_numpy.unpackb(ws.recv(timeout=60))
        assert metadata["num_steps"] == 2 and metadata["policy"] == "tiny"
        direct = PiPolicy.from_pretrained(
            policy_dir, device="cpu", num_steps=2, default_prompt="pick up the bowl"
        )
        # two processes: their thread pools may sum fp32 matmuls in a different order (seen: 1.4e-6)
        np.testing.assert_allclose(reply["actions"], direct.infer(obs)["actions"], rtol=0, atol=1e-5)
