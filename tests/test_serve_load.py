"""16 concurrent clients x 50 requests each: every request answered, on its own connection, with its own reply."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from websockets.sync.client import connect

from shallowpi.serve import msgpack_numpy
from shallowpi.serve.server import ServerThread
from shallowpi.testing import DummyPolicy, expected_actions

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")

CLIENTS, REQUESTS, TIMEOUT = 16, 50, 60


def run_client(url: str, client_id: int) -> int:
    """Sends REQUESTS observations with a state unique to (client, request); checks each reply is its own."""
    img = np.zeros((224, 224, 3), np.uint8)
    answered = 0
    with connect(url, compression=None, max_size=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        ws.recv(timeout=TIMEOUT)  # metadata
        for i in range(REQUESTS):
            state = np.full(8, client_id * 1000 + i, np.float32)
            obs = {
                "observation/image": img,
                "observation/wrist_image": img,
                "observation/state": state,
                "prompt": "go",
            }
            ws.send(msgpack_numpy.packb(obs))
            reply = ws.recv(timeout=TIMEOUT)
            assert isinstance(reply, bytes), reply
            np.testing.assert_array_equal(msgpack_numpy.unpackb(reply)["actions"], expected_actions(state))
            answered += 1
    return answered


def test_16_clients_x_50_requests_all_answered_none_lost():
    # delay_s stands in for a fast model, so requests really queue up behind each other in the worker.
    with ServerThread(DummyPolicy(delay_s=0.001), port=0) as srv, ThreadPoolExecutor(CLIENTS) as pool:
        answered = list(pool.map(run_client, [srv.url] * CLIENTS, range(CLIENTS), timeout=5 * TIMEOUT))
        assert answered == [REQUESTS] * CLIENTS
        assert srv.server.requests_served == CLIENTS * REQUESTS
