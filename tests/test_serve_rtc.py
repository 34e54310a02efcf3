"""Real-time chunking over the openpi protocol: a request with the previous chunk's tail and the delay gets a
guided chunk; one without them gets today's reply bit for bit; bad values are one error; onnxruntime refuses."""

from __future__ import annotations

import numpy as np
import pytest
from websockets.sync.client import connect

from onnx_helpers import libero_obs
from serve_process import onnx_serve_args, serving
from shallowpi.serve import msgpack_numpy
from shallowpi.serve.obs_mapping import ObservationError
from shallowpi.serve.policy import PiPolicy
from shallowpi.serve.rtc_keys import DELAY_KEY, PREV_ACTIONS_KEY
from shallowpi.serve.server import ServerThread
from shallowpi.testing import save_tiny_policy
from test_serve_policy import obs


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> PiPolicy:
    path = save_tiny_policy(tmp_path_factory.mktemp("tiny"), state_dim=8, action_dim=7)
    return PiPolicy.from_pretrained(path, device="cpu", num_steps=4)


def test_request_without_rtc_keys_is_todays_reply(policy):
    o = obs(1)
    sample = policy.prepare(o).sample
    assert policy.prepare(o).rtc is None
    np.testing.assert_array_equal(policy.infer(o)["actions"], policy.predictor.predict(sample, seed=0))


def test_guided_reply_continues_the_previous_chunk(policy):
    first = policy.infer(obs(1))["actions"]
    tail = first[3:]  # 3 actions executed when the next request leaves
    plain = policy.infer(obs(2))["actions"]
    guided = policy.infer({**obs(2), PREV_ACTIONS_KEY: tail, DELAY_KEY: np.int64(2)})["actions"]
    assert guided.shape == plain.shape and np.isfinite(guided).all()
    frozen_plain, frozen = np.abs(plain[:2] - tail[:2]).max(), np.abs(guided[:2] - tail[:2]).max()
    assert frozen < 0.2 * frozen_plain, (frozen, frozen_plain)
    jump_plain, jump = np.abs(plain[2] - tail[2]).max(), np.abs(guided[2] - tail[2]).max()
    assert jump < jump_plain, (jump, jump_plain)
    assert policy.metadata["rtc"]["keys"] == [PREV_ACTIONS_KEY, DELAY_KEY]


@pytest.mark.parametrize(
    "extra, match",
    [
        ({PREV_ACTIONS_KEY: np.zeros((4, 7), np.float32)}, f"'{DELAY_KEY}' is missing"),
        ({DELAY_KEY: 1}, f"'{PREV_ACTIONS_KEY}' is missing"),
        ({PREV_ACTIONS_KEY: np.zeros((4, 6), np.float32), DELAY_KEY: 1}, r"must have shape \(n, 7\)"),
        ({PREV_ACTIONS_KEY: np.zeros((11, 7), np.float32), DELAY_KEY: 1}, r"1 <= n <= 10"),
        ({PREV_ACTIONS_KEY: np.zeros((0, 7), np.float32), DELAY_KEY: 0}, r"1 <= n <= 10"),
        ({PREV_ACTIONS_KEY: np.zeros(7, np.float32), DELAY_KEY: 0}, r"must have shape"),
        ({PREV_ACTIONS_KEY: np.full((4, 7), np.nan, np.float32), DELAY_KEY: 1}, "non-finite"),
        ({PREV_ACTIONS_KEY: np.zeros((4, 7), np.float32), DELAY_KEY: 5}, r"must be in \[0, 4\]"),
        ({PREV_ACTIONS_KEY: np.zeros((4, 7), np.float32), DELAY_KEY: -1}, r"must be in \[0, 4\]"),
        ({PREV_ACTIONS_KEY: np.zeros((4, 7), np.float32), DELAY_KEY: 1.5}, "must be an integer"),
        ({PREV_ACTIONS_KEY: np.zeros((4, 7), np.float32), DELAY_KEY: True}, "must be an integer"),
        ({PREV_ACTIONS_KEY: "zeros", DELAY_KEY: 1}, "numeric array"),
    ],
)
def test_bad_rtc_values_are_refused(policy, extra, match):
    with pytest.raises(ObservationError, match=match):
        policy.prepare({**obs(1), **extra})


def test_bad_rtc_value_is_one_error_reply(policy):
    with ServerThread(policy, port=0) as srv:
        url = f"ws://127.0.0.1:{srv.port}"
        with connect(url, compression=None, max_size=None, open_timeout=30) as ws:
            ws.recv(timeout=30)  # metadata
            ws.send(msgpack_numpy.packb({**obs(1), PREV_ACTIONS_KEY: np.zeros((4, 7)), DELAY_KEY: 9}))
            error = ws.recv(timeout=60)
    assert isinstance(error, str) and f"'{DELAY_KEY}' must be in [0, 4]" in error


def test_onnxruntime_backend_refuses_rtc(teacher_onnx):
    with serving(onnx_serve_args(teacher_onnx)) as port:
        o = libero_obs(2)
        with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None, open_timeout=30) as ws:
            ws.recv(timeout=30)
            ws.send(msgpack_numpy.packb({**o, PREV_ACTIONS_KEY: np.zeros((4, 4), np.float32), DELAY_KEY: 1}))
            error = ws.recv(timeout=60)
    assert isinstance(error, str) and "onnxruntime backend does not run real-time chunking" in error
