"""`shallowpi serve` as a child process for CLI tests: started, found listening, /healthz checked, stopped."""

from __future__ import annotations

import contextlib
import http.client
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

TIMEOUT = 120  # bounds the whole test even if the server hangs


def onnx_serve_args(onnx_dir) -> list[str]:
    """`shallowpi serve` arguments for an exported folder on the onnxruntime backend, LIBERO keys, 1 thread."""
    return ["--backend", "onnxruntime", "--policy", str(onnx_dir), "--obs-map", "libero", "--threads", "1"]


@contextlib.contextmanager
def serving(args: list[str]) -> Iterator[int]:
    """Run `shallowpi serve ARGS --host 127.0.0.1 --port 0`, yield its port once it listens and answers
    /healthz; on leaving, SIGTERM must stop it with exit 0 (the server's clean shutdown)."""
    cmd = [sys.executable, "-m", "shallowpi", "serve", *args, "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(TIMEOUT, proc.kill)
    timer.start()
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if m := re.search(r"listening on ws://127\.0\.0\.1:(\d+)", line):
                port = int(m.group(1))
                break
        else:
            pytest.fail("server exited before listening:\n" + "".join(lines))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        yield port
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
