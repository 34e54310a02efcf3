"""The openpi websocket protocol, end to end on loopback, with a model-free policy (DummyPolicy).

What a robot relies on: metadata first, one reply per request, errors reported as a text frame + close 1011
for the offending connection only, and the server staying responsive while a model runs or a client stalls.
"""

from __future__ import annotations

import http.client
import os
import re
import struct
import threading

import msgpack
import numpy as np
import pytest
import websockets
from websockets.sync.client import connect

from shallowpi.serve import msgpack_numpy
from shallowpi.serve.server import ServerThread
from shallowpi.testing import DummyPolicy, expected_actions

# websockets 17 warns about connect() outside `with`; openpi-client 0.1.2 calls it that way, and so do we.
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")

TIMEOUT = 20  # seconds; bounds every wait so a broken server fails the test instead of hanging CI


def good_obs(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "observation/image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        "observation/state": rng.normal(size=8).astype(np.float32),
        "prompt": "put the bowl on the plate",
    }


def open_client(srv: ServerThread):
    ws = connect(srv.url, compression=None, max_size=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT)
    metadata = msgpack_numpy.unpackb(ws.recv(timeout=TIMEOUT))
    return ws, metadata


def infer(ws, obs: dict) -> dict:
    ws.send(msgpack_numpy.packb(obs))
    reply = ws.recv(timeout=TIMEOUT)
    assert isinstance(reply, bytes), f"server reported an error: {reply}"
    return msgpack_numpy.unpackb(reply)


def assert_good_reply(ws, seed: int = 0) -> None:
    obs = good_obs(seed)
    out = infer(ws, obs)
    np.testing.assert_array_equal(out["actions"], expected_actions(obs["observation/state"]))


@pytest.fixture(scope="module")
def server():
    with ServerThread(DummyPolicy(), host="127.0.0.1", port=0) as srv:
        yield srv


def test_metadata_frame_then_replies(server):
    ws, metadata = open_client(server)
    with ws:
        assert metadata == DummyPolicy().metadata
        assert metadata["obs_mapping"]["images"]["base_0_rgb"] == "observation/image"
        obs = good_obs(1)
        first, second = infer(ws, obs), infer(ws, obs)
        assert set(first) == {"actions", "policy_timing", "server_timing"}
        assert first["actions"].dtype == np.float32 and first["actions"].shape == (10, 7)
        np.testing.assert_array_equal(first["actions"], expected_actions(obs["observation/state"]))
        assert first["server_timing"]["infer_ms"] >= 0 and "prev_total_ms" not in first["server_timing"]
        assert second["server_timing"]["prev_total_ms"] > 0  # openpi reports the previous round trip


def test_healthz():
    with ServerThread(DummyPolicy(), port=0) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"OK\n")


def _obs_with(**over) -> dict:
    obs = good_obs()
    obs.update(over)
    return {k: v for k, v in obs.items() if v is not None}


BAD_REQUESTS = {
    "malformed msgpack": (b"\xc1\x00\x01", "malformed msgpack frame"),
    "truncated array": (
        msgpack.packb(
            {
                "observation/image": {
                    b"__ndarray__": True,
                    b"data": b"\x00" * 5,
                    b"dtype": "|u1",
                    b"shape": [224, 224, 3],
                }
            }
        ),
        "bytes of data",
    ),
    "text frame": ("hello", "expected a binary msgpack frame"),
    "not a map": (msgpack.packb([1, 2, 3]), "must be a msgpack map"),
    "missing key": (
        msgpack_numpy.packb(_obs_with(**{"observation/state": None})),
        "missing observation key 'observation/state'",
    ),
    "wrong dtype": (
        msgpack_numpy.packb(_obs_with(**{"observation/image": np.zeros((224, 224, 3), np.int64)})),
        "'observation/image' must be uint8",
    ),
    "wrong shape": (
        msgpack_numpy.packb(_obs_with(**{"observation/state": np.zeros(5, np.float32)})),
        r"'observation/state' must have shape \(8,\)",
    ),
    "image shape": (
        msgpack_numpy.packb(_obs_with(**{"observation/wrist_image": np.zeros((224, 224), np.uint8)})),
        "'observation/wrist_image' must have shape",
    ),
    "non-finite": (
        msgpack_numpy.packb(_obs_with(**{"observation/state": np.array([np.nan] + [0.0] * 7, np.float32)})),
        "'observation/state' contains non-finite",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_closes_only_that_connection(server, case):
    frame, reason = BAD_REQUESTS[case]
    bystander, _ = open_client(server)  # connected before the bad client, must keep working
    bad, _ = open_client(server)
    with bystander, bad:
        bad.send(frame)
        text = bad.recv(timeout=TIMEOUT)
        assert isinstance(text, str), "errors are reported as a text frame (openpi-client raises on str)"
        assert re.search(reason, text), text
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            bad.recv(timeout=TIMEOUT)
        assert closed.value.rcvd.code == 1011
        assert_good_reply(bystander, seed=2)
    fresh, _ = open_client(server)  # and a client that connects afterwards is served too
    with fresh:
        assert_good_reply(fresh, seed=3)


def test_policy_exception_sends_traceback_and_1011():
    class Broken(DummyPolicy):
        def infer(self, obs):
            raise RuntimeError("model exploded")

    with ServerThread(Broken(), port=0) as srv:
        ws, _ = open_client(srv)
        with ws:
            ws.send(msgpack_numpy.packb(good_obs()))
            text = ws.recv(timeout=TIMEOUT)
            assert isinstance(text, str) and "Traceback" in text and "RuntimeError: model exploded" in text
            with pytest.raises(websockets.ConnectionClosedError) as closed:
                ws.recv(timeout=TIMEOUT)
            assert closed.value.rcvd.code == 1011


class GatedPolicy(DummyPolicy):
    """infer() blocks until the test opens the gate: proves what the server does while a model runs."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.gate = threading.Event(), threading.Event()

    def infer(self, obs):
        self.entered.set()
        assert self.gate.wait(TIMEOUT)
        return super().infer(obs)


def test_server_stays_responsive_while_inference_runs():
    policy = GatedPolicy()
    with ServerThread(policy, port=0) as srv:
        busy, _ = open_client(srv)
        with busy:
            busy.send(msgpack_numpy.packb(good_obs()))
            assert policy.entered.wait(TIMEOUT)
            # The model is busy: the event loop must still answer health checks and new handshakes.
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
            conn.request("GET", "/healthz")
            assert conn.getresponse().status == 200
            other, metadata = open_client(srv)
            with other:
                assert metadata["policy"] == "dummy"
                policy.gate.set()
                assert isinstance(busy.recv(timeout=TIMEOUT), bytes)
                assert_good_reply(other)


def test_stalled_client_does_not_block_others(server):
    """A client that announces a 1 MB frame, sends 10 bytes of it and stalls: the others are still served."""
    stalled = connect(server.url, compression=None, open_timeout=TIMEOUT, close_timeout=0.5)
    with stalled:  # close_timeout: its close frame would land inside the unfinished frame, nobody answers it
        stalled.recv(timeout=TIMEOUT)  # metadata
        mask = os.urandom(4)
        header = (
            bytes([0x82, 0x80 | 127]) + struct.pack(">Q", 1 << 20) + mask
        )  # FIN+binary, masked, 64-bit len
        stalled.socket.sendall(header + bytes(b ^ mask[i % 4] for i, b in enumerate(b"\x00" * 10)))
        for seed in range(5):
            other, _ = open_client(server)
            with other:
                assert_good_reply(other, seed)
