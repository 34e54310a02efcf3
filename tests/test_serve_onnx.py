"""`shallowpi serve --backend onnxruntime`: an exported folder on the openpi protocol, with the same checks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import websockets
from websockets.sync.client import connect

from onnx_helpers import PROMPT_LENGTH, STATE_DIM, libero_obs
from serve_process import TIMEOUT, onnx_serve_args, serving
from shallowpi.onnx_runtime.policy import OnnxPolicy
from shallowpi.onnx_runtime.runner import OnnxRunner
from shallowpi.serve import msgpack_numpy
from shallowpi.serve.obs_mapping import ObservationError
from shallowpi.serve.server import ServerThread


def test_serve_onnxruntime_end_to_end(teacher_onnx):
    with serving(onnx_serve_args(teacher_onnx)) as port:
        obs = libero_obs(2)
        with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None, open_timeout=30) as ws:
            metadata = msgpack_numpy.unpackb(ws.recv(timeout=30))
            ws.send(msgpack_numpy.packb(obs))
            reply = msgpack_numpy.unpackb(ws.recv(timeout=60))
            bad = {**obs, "observation/state": np.zeros(3, np.float32)}
            ws.send(msgpack_numpy.packb(bad))
            error = ws.recv(timeout=60)
        assert metadata["backend"] == "onnxruntime" and metadata["action_dim"] == 4
        direct = OnnxPolicy(OnnxRunner(teacher_onnx), obs_mapping="libero").infer(obs)["actions"]
        assert reply["actions"].shape == (10, 4)
        np.testing.assert_allclose(reply["actions"], direct, rtol=0, atol=1e-6)
        assert isinstance(error, str) and f"'observation/state' must have shape ({STATE_DIM},)" in error


def test_prompt_that_does_not_fit_is_refused_or_cut(teacher_onnx):
    """As the torch backend (test_prompt_fit.py): an error naming the token count, or `truncate_prompt`.
    Under the policy's character cap, so the tokenizer, not the cheap length check, refuses it."""
    prompt = " ".join(["pick up the small red cube and put it in the bowl"] * 3)
    obs = {**libero_obs(0), "prompt": prompt}
    strict = OnnxPolicy(OnnxRunner(teacher_onnx))
    assert len(prompt) <= strict.max_task_chars
    with pytest.raises(
        ObservationError, match=rf"the prompt is \d+ tokens, more than the limit of {PROMPT_LENGTH}"
    ):
        strict.infer(obs)
    loose = OnnxPolicy(OnnxRunner(teacher_onnx), truncate_prompt=True)
    assert loose.infer(obs)["actions"].shape == (10, 4)


class _NanSession:
    """Stands in for the denoise graph of a policy gone wrong: every velocity is NaN."""

    def __init__(self, real) -> None:
        self.real = real

    def run(self, names, feeds):
        return [np.full_like(feeds["x_t"], np.nan)]

    def get_outputs(self):
        return self.real.get_outputs()


def test_non_finite_actions_are_an_error_not_a_reply(teacher_onnx):
    runner = OnnxRunner(teacher_onnx)
    runner.sessions["denoise"] = _NanSession(runner.sessions["denoise"])
    with ServerThread(OnnxPolicy(runner, obs_mapping="libero"), port=0) as srv:
        ws = connect(srv.url, compression=None, max_size=None, open_timeout=30, close_timeout=30)
        with ws:
            ws.recv(timeout=30)  # metadata
            ws.send(msgpack_numpy.packb(libero_obs(0)))
            text = ws.recv(timeout=60)
            assert isinstance(text, str) and "NonFiniteActions" in text
            with pytest.raises(websockets.ConnectionClosedError) as closed:
                ws.recv(timeout=30)
            assert closed.value.rcvd.code == 1011


def test_serve_onnxruntime_rejects_a_torch_folder(tmp_path):
    from onnx_helpers import TEACHER

    cmd = [sys.executable, "-m", "shallowpi", "serve", "--backend", "onnxruntime", "--policy", str(TEACHER)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2
    assert "no manifest.json" in proc.stderr and "shallowpi export" in proc.stderr
