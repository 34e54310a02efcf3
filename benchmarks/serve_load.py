"""Load on the openpi websocket server: requests/s and p50/p99 round-trip latency with 1, 4 and 16 clients.

    python3 benchmarks/serve_load.py                          # both policies below, 50 requests per client
    python3 benchmarks/serve_load.py --policy dummy           # protocol + transport cost only (no model)
    python3 benchmarks/serve_load.py --policy tiny            # tiny random π0.5 (56 px), 2 Euler steps
    python3 benchmarks/serve_load.py --policy PATH --num-steps 10

The server runs in this process (its own event loop thread + one inference thread); each client is a
separate process (as robots are) sending LIBERO-style observations (two 224x224 RGB images, state (8,),
a prompt) over loopback. Latency = send -> reply received, per request, after 3 warm-up requests per
client; requests/s = all timed requests / (last reply - first send). Writes benchmarks/results/serve_load.json.
Numbers include the clients' own CPU time: on a 2-core machine 16 client processes compete with the server.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WARMUP = 3


def client(url: str, requests: int, image_size: int, seed: int, barrier, results) -> None:
    """One robot: connect, read metadata, warm up, wait for the others, then `requests` timed round trips."""
    from websockets.sync.client import connect

    from shallowpi.serve import msgpack_numpy

    rng = np.random.default_rng(seed)
    obs = {
        "observation/image": rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8),
        "observation/state": rng.normal(size=8).astype(np.float32),
        "prompt": "put the bowl on the plate",
    }
    frame = msgpack_numpy.packb(obs)
    latencies, first_send, last_recv = [], None, None
    with connect(url, compression=None, max_size=None, open_timeout=60) as ws:
        ws.recv(timeout=60)
        for _ in range(WARMUP):
            ws.send(frame)
            ws.recv(timeout=600)
        barrier.wait(timeout=600)  # all clients start timed requests together, none still importing
        for _ in range(requests):
            t0 = time.perf_counter()
            ws.send(frame)
            reply = ws.recv(timeout=600)
            latencies.append((time.perf_counter() - t0) * 1e3)
            if first_send is None:
                first_send = time.time() - latencies[-1] / 1e3
            assert isinstance(reply, bytes), reply
        last_recv = time.time()
    results.put({"latencies_ms": latencies, "first_send": first_send, "last_recv": last_recv})


def make_policy(spec: str, num_steps: int | None, workdir: Path):
    if spec == "dummy":
        from shallowpi.testing import DummyPolicy

        return DummyPolicy()
    from shallowpi.serve.policy import PiPolicy
    from shallowpi.testing import save_tiny_policy

    path = save_tiny_policy(workdir / "tiny", state_dim=8, action_dim=7) if spec == "tiny" else Path(spec)
    return PiPolicy.from_pretrained(path, device="cpu", obs_mapping="libero", num_steps=num_steps)


def run_level(url: str, clients: int, requests: int, image_size: int) -> dict:
    ctx = mp.get_context("spawn")  # no fork of a process that runs server threads
    barrier, queue = ctx.Barrier(clients), ctx.Queue()
    procs = [
        ctx.Process(target=client, args=(url, requests, image_size, i, barrier, queue))
        for i in range(clients)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=900) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    lat = np.concatenate([r["latencies_ms"] for r in results])
    span = max(r["last_recv"] for r in results) - min(r["first_send"] for r in results)
    return {
        "clients": clients,
        "requests": int(lat.size),
        "requests_per_s": float(lat.size / span),
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p99": float(np.percentile(lat, 99)),
        "latency_ms_mean": float(lat.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--policy", action="append", help="dummy | tiny | PATH (repeatable; default: dummy and tiny)"
    )
    p.add_argument("--clients", default="1,4,16", help="comma-separated client counts")
    p.add_argument("--requests", type=int, default=50, help="timed requests per client")
    p.add_argument("--image-size", type=int, default=224, help="side of the square images the clients send")
    p.add_argument("--num-steps", type=int, default=2, help="Euler steps for model policies")
    p.add_argument(
        "--torch-threads", type=int, default=None, help="torch threads of the server (default: torch's)"
    )
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "serve_load.json"))
    args = p.parse_args(argv)

    import torch

    from shallowpi.serve.server import ServerThread

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    report: dict = {
        "benchmark": "serve_load",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            # other work on the machine skews every number; record how busy it was
            "loadavg_1min_at_start": os.getloadavg()[0],
        },
        "torch_threads": torch.get_num_threads(),
        "requests_per_client": args.requests,
        "image_size": args.image_size,
        "results": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.policy or ["dummy", "tiny"]:
            policy = make_policy(spec, args.num_steps, Path(tmp))
            with ServerThread(policy, host="127.0.0.1", port=0) as srv:
                for n in (int(c) for c in args.clients.split(",")):
                    row = {"policy": spec, "num_steps": None if spec == "dummy" else args.num_steps}
                    row |= run_level(srv.url, n, args.requests, args.image_size)
                    report["results"].append(row)
                    print(
                        f"{spec:>6} clients={n:>2}  {row['requests_per_s']:8.1f} req/s  "
                        f"p50 {row['latency_ms_p50']:7.2f} ms  p99 {row['latency_ms_p99']:7.2f} ms",
                        flush=True,
                    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
