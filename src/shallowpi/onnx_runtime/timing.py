"""The onnxruntime side of `shallowpi bench --backend onnxruntime`: a child process that times `OnnxRunner`
alone (no torch in it: onnxruntime's spinning threads and torch's would slow each other).

    python -m shallowpi.onnx_runtime.timing SPEC.json      # prints one JSON line

SPEC: {"export": folder, "inputs": .npz (images [B, n, 3, S, S], image_masks, tokens, token_masks, noise,
state when π0), "warmup": N, "iters": N, "threads": N | null}. The line: build_s (session creation),
first_call_s, warmup_s (both), the call times in ms, the first call's actions, peak RSS and the RSS before
the first call (MiB), and the pid.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from shallowpi.onnx_runtime.runner import OnnxRunner


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(spec: dict) -> dict:
    x = dict(np.load(spec["inputs"]))
    t0 = time.perf_counter()
    runner = OnnxRunner(spec["export"], threads=spec.get("threads"))
    build_s = time.perf_counter() - t0
    args = (x["images"], x["image_masks"], x["tokens"], x["token_masks"], x.get("state"))
    call = lambda: runner.sample(*args, noise=x["noise"])  # noqa: E731
    before = _rss_mb()
    t0 = time.perf_counter()
    actions = call()
    first_call_s = time.perf_counter() - t0
    for _ in range(spec["warmup"]):
        call()
    times = []
    for _ in range(spec["iters"]):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return {
        "build_s": build_s,
        "first_call_s": first_call_s,
        "warmup_s": build_s + first_call_s,
        "times_ms": times,
        "actions": actions.tolist(),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": before,
        "pid": os.getpid(),
    }


if __name__ == "__main__":
    print(json.dumps(run(json.loads(Path(sys.argv[1]).read_text()))))
