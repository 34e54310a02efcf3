"""One misbehaving client costs only its own work: bounded server memory, a good client keeps being served.

The server runs in its own process (its RSS is what is measured), once per backend: the model-free
DummyPolicy, and `shallowpi serve --backend onnxruntime` on the bundled teacher's export (the same
ServedPolicy base gives both the frame cap and the checks beside the event loop). A good client sends
requests the whole time; a bad client sends, one after the other, the frames that cost the old server
gigabytes or seconds: a frame of empty maps, a frame over the cap, big frames pipelined on one connection
without reading replies, and a 10 MB prompt. The test prints the good client's latency per phase and the
server's peak RSS (benchmark-style numbers, no timing assertions) and asserts that the frame cap is the
policy's largest valid observation, that the peak RSS stays bounded, that every bad frame got an error (never
actions) and that every good request was answered correctly.
"""

from __future__ import annotations

import re
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import websockets
from websockets.sync.client import connect

from onnx_helpers import libero_obs
from shallowpi.cli import main
from shallowpi.errors import UserError
from shallowpi.serve import msgpack_numpy
from shallowpi.serve.server import PolicyServer
from shallowpi.testing import DummyPolicy, expected_actions

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")

TIMEOUT = 60
RSS_GROWTH_LIMIT_MB = 400  # the old server grew by 2,300 MB on the empty-maps frame alone

# The dummy backend's server; it prints what `shallowpi serve` prints, and stops on SIGTERM as it does.
SERVER = r"""
import signal, threading
from shallowpi.testing import DummyPolicy
from shallowpi.serve.server import ServerThread
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
with ServerThread(DummyPolicy(delay_s=0.002), port=0) as srv:
    print(f"largest request frame accepted: {srv.server.max_frame_bytes} bytes", flush=True)
    print(f"shallowpi serve: listening on ws://127.0.0.1:{srv.port}", flush=True)
    while not stop.wait(0.2):
        pass
"""


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def good_obs(i: int) -> dict:
    img = np.zeros((224, 224, 3), np.uint8)
    return {
        "observation/image": img,
        "observation/wrist_image": img,
        "observation/state": np.full(8, i, np.float32),
        "prompt": "put the bowl on the plate",
    }


@dataclass
class Backend:
    command: list[str]  # the server process
    max_request_bytes: int  # the policy's largest valid observation: the default frame cap
    good_obs: Callable[[int], dict]
    expected: Callable[[dict], np.ndarray]  # the actions a good observation must get
    atol: float = 0.0


def dummy_backend() -> Backend:
    return Backend(
        [sys.executable, "-c", SERVER],
        DummyPolicy(delay_s=0.002).max_request_bytes,
        good_obs,
        lambda obs: expected_actions(obs["observation/state"]),
    )


def onnx_backend(export) -> Backend:
    from shallowpi.onnx_runtime.policy import OnnxPolicy

    policy = OnnxPolicy.from_exported(export, threads=1)  # what `serve --backend onnxruntime` loads
    observations = [libero_obs(i) for i in range(3)]
    replies = [policy.infer(o)["actions"] for o in observations]  # seed 0: what the server answers
    command = [sys.executable, "-m", "shallowpi", "serve", "--backend", "onnxruntime", "--policy", str(export),
               "--obs-map", "libero", "--threads", "1", "--host", "127.0.0.1", "--port", "0"]  # fmt: skip
    return Backend(
        command,
        policy.max_request_bytes,
        lambda i: observations[i % len(observations)],
        lambda obs: replies[int(obs["prompt"].rsplit(" ", 1)[1])],  # libero_obs(i)'s prompt ends in i
        atol=1e-5,
    )


@pytest.fixture(params=["dummy", "onnxruntime"])
def backend(request) -> Backend:
    if request.param == "dummy":
        return dummy_backend()
    return onnx_backend(request.getfixturevalue("teacher_onnx"))


def start_server(command: list[str]) -> tuple[subprocess.Popen, int, int]:
    """Start the server; (process, port, frame cap) from its start-up lines, then keep draining its output."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cap = port = None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if m := re.search(r"largest request frame accepted: (\d+) bytes", line):
            cap = int(m.group(1))
        if m := re.search(r"listening on ws://127\.0\.0\.1:(\d+)", line):
            port = int(m.group(1))
            break
    if port is None or cap is None:
        proc.kill()
        pytest.fail("server did not start:\n" + "".join(lines))
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # never block its logs
    return proc, port, cap


def empty_maps_frame(n_bytes: int) -> bytes:
    """Nested arrays of empty maps: one byte of msgpack each, ~100 bytes of Python objects decoded."""
    inner = 9000
    n_inner = max(1, n_bytes // (inner + 3))
    one = b"\xdc" + struct.pack(">H", inner) + b"\x80" * inner  # array16 of `inner` fixmaps
    return b"\xdd" + struct.pack(">I", n_inner) + one * n_inner


def big_valid_frame(obs: dict, n_bytes: int) -> bytes:
    side = int((n_bytes / 2 / 3) ** 0.5) - 8  # two cameras just under the cap
    img = np.zeros((side, side, 3), np.uint8)
    return msgpack_numpy.packb({**obs, "observation/image": img, "observation/wrist_image": img})


class GoodClient(threading.Thread):
    """Sends good requests back to back and records each latency under the current phase's name."""

    def __init__(self, url: str, backend: Backend) -> None:
        super().__init__(daemon=True)
        self.url, self.phase, self.backend = url, "baseline", backend
        self.latency: dict[str, list[float]] = {}
        self.stop, self.error = threading.Event(), None

    def run(self) -> None:
        try:
            with connect(self.url, compression=None, max_size=None, open_timeout=TIMEOUT) as ws:
                ws.recv(timeout=TIMEOUT)
                i = 0
                while not self.stop.is_set():
                    obs, phase = self.backend.good_obs(i), self.phase
                    t0 = time.perf_counter()
                    ws.send(msgpack_numpy.packb(obs))
                    reply = msgpack_numpy.unpackb(ws.recv(timeout=TIMEOUT))
                    self.latency.setdefault(phase, []).append((time.perf_counter() - t0) * 1e3)
                    np.testing.assert_allclose(
                        reply["actions"], self.backend.expected(obs), rtol=0, atol=self.backend.atol
                    )
                    i += 1
        except BaseException as e:  # reported by the test
            self.error = e


def _expect_error(url: str, frame: bytes) -> str:
    """Send one bad frame; the reply is a reason (text) or a close; returns what the client saw."""
    with connect(url, compression=None, max_size=None, open_timeout=TIMEOUT, close_timeout=5) as ws:
        ws.recv(timeout=TIMEOUT)
        try:
            ws.send(frame)
            reply = ws.recv(timeout=TIMEOUT)
            assert isinstance(reply, str), "a bad frame must not get actions"
            return reply
        except websockets.ConnectionClosed as e:
            return f"closed {e.rcvd.code if e.rcvd else None}"


def _pipeline(url: str, frame: bytes, n: int) -> None:
    """n big frames sent without reading a reply; the server must stop reading, not buffer them all."""
    with connect(url, compression=None, max_size=None, open_timeout=TIMEOUT, close_timeout=2) as ws:
        ws.recv(timeout=TIMEOUT)
        ws.socket.settimeout(20)  # when the server stops reading, our send blocks; that is the point
        sent = 0
        try:
            for _ in range(n):
                ws.send(frame)
                sent += 1
        except (TimeoutError, OSError, websockets.ConnectionClosed):
            pass
        print(f"  pipelined {sent}/{n} frames of {len(frame) / 2**20:.1f} MiB before the server pushed back")


def test_misbehaving_client_bounded_memory_and_good_client_served(backend):
    proc, port, cap = start_server(backend.command)
    try:
        assert cap == backend.max_request_bytes < 16 * 2**20, "the frame cap is the policy's largest request"
        url = f"ws://127.0.0.1:{port}"
        good = GoodClient(url, backend)
        good.start()
        time.sleep(1.0)
        base_rss = _status_kb(proc.pid, "VmRSS")

        # Built before the clock starts: building them here must not slow the good client (same GIL).
        maps, over = empty_maps_frame(cap - 1024), b"\x00" * (cap + 1)
        big = big_valid_frame(backend.good_obs(0), cap - 4096)
        prompt = msgpack_numpy.packb({**backend.good_obs(0), "prompt": "x" * 10**7})
        phases = {
            "empty maps": lambda: print("  ->", _expect_error(url, maps)[:90]),
            "over the cap": lambda: print("  ->", _expect_error(url, over)[:90]),
            "pipelined": lambda: _pipeline(url, big, 8),
            "10 MB prompt": lambda: print("  ->", _expect_error(url, prompt)[:90]),
        }
        for name, attack in phases.items():
            good.phase = name
            print(f"phase {name}:")
            attack()
            time.sleep(0.3)
        good.phase = "after"
        time.sleep(1.0)
        good.stop.set()
        good.join(TIMEOUT)
        peak_rss = _status_kb(proc.pid, "VmHWM")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert good.error is None, f"the good client failed: {good.error!r}"
    print(
        f"\nframe cap {cap / 2**20:.1f} MiB; server RSS {base_rss / 1024:.0f} MB at start, peak {peak_rss / 1024:.0f} MB"
    )
    print(f"{'phase':<14} {'requests':>8} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>8}")
    for phase, ms in good.latency.items():
        a = np.asarray(ms)
        print(f"{phase:<14} {len(a):8d} {np.median(a):8.1f} {np.percentile(a, 90):8.1f} {a.max():8.1f}")
    assert sum(map(len, good.latency.values())) > 0
    growth_mb = (peak_rss - base_rss) / 1024
    assert growth_mb < RSS_GROWTH_LIMIT_MB, f"server RSS grew by {growth_mb:.0f} MB"


def test_default_frame_cap_is_the_policys_largest_observation():
    policy = DummyPolicy()
    server = PolicyServer(policy, port=0)
    assert server.max_frame_bytes == policy.max_request_bytes
    # two 1280 x 1280 uint8 cameras and the rest: far below the old fixed 64 MiB
    assert 2 * 1280 * 1280 * 3 < server.max_frame_bytes < 16 * 2**20
    assert PolicyServer(policy, port=0, max_frame_bytes=100 * 2**20).max_frame_bytes == 100 * 2**20
    with pytest.raises(UserError, match="must be > 0"):
        PolicyServer(policy, port=0, max_frame_bytes=0)


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_serve_max_frame_mb_must_be_positive(value, capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--policy", "x", "--max-frame-mb", value])
    assert e.value.code == 2 and "must be > 0" in capsys.readouterr().err


def test_frame_item_bound_refuses_before_building():
    frame = empty_maps_frame(2 * 2**20)
    with pytest.raises(ValueError, match="maps/list entries"):
        msgpack_numpy.unpackb(frame, max_items=10_000)
    assert isinstance(msgpack_numpy.unpackb(msgpack_numpy.packb(good_obs(1)), max_items=10_000), dict)
