"""Reader throughput with video decoding: samples/s of LeRobotDataset through a DataLoader, 1 and 2 workers.

    python3 benchmarks/data_throughput.py [--dataset DIR] [--samples 600] [--image-size 128]

Without --dataset it writes a synthetic 128 px, 2-camera H.264 dataset (20 episodes x 100 frames, moving
content) to a temp folder first. Random order (seeded shuffle), batch 8, chunk 50. Writes
benchmarks/results/data_throughput.json and prints it. Numbers only; no assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from shallowpi.atomic import write_json_atomic
from shallowpi.data.lerobot_dataset import LeRobotDataset
from shallowpi.data.writer import LeRobotDatasetWriter

OUT = Path(__file__).resolve().parent / "results" / "data_throughput.json"


def synthetic(root: Path, size: int, episodes: int = 20, length: int = 100) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    cams = {"observation.images.corner4": (size, size), "observation.images.gripperPOV": (size, size)}
    with LeRobotDatasetWriter(
        root, fps=80, cameras=cams, state_names=list("abcd"), action_names=list("abcd")
    ) as w:
        for e in range(episodes):
            t = np.arange(length)[:, None, None]
            base = (
                np.sin((xx[None] + 2 * t) / 9.0) * np.cos((yy[None] - t) / 7.0) * 100 + 128
            )  # moving texture
            frames = np.repeat(base[..., None], 3, axis=-1) + rng.normal(0, 4, (length, size, size, 3))
            frames = frames.clip(0, 255).astype(np.uint8)
            w.add_episode(
                {k: frames for k in cams},
                rng.normal(size=(length, 4)),
                rng.uniform(-1, 1, (length, 4)),
                task=f"task {e % 4}",
            )
    return root


def measure(ds: LeRobotDataset, workers: int, samples: int, batch: int = 8) -> float:
    sampler = torch.utils.data.RandomSampler(
        ds, num_samples=samples, generator=torch.Generator().manual_seed(0)
    )
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch, sampler=sampler, num_workers=workers, persistent_workers=False
    )
    it = iter(loader)
    next(it)  # worker start-up and first container opens are not steady state
    t0, n = time.perf_counter(), 0
    for b in it:
        n += len(b["index"])
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, default=None)
    p.add_argument("--samples", type=int, default=600)
    p.add_argument("--image-size", type=int, default=128)
    a = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = a.dataset or synthetic(Path(tmp) / "synthetic", a.image_size)
        ds = LeRobotDataset(root, chunk_size=50)
        # Best of two runs each, interleaved: the first run also pays for cold file caches.
        results = {str(w): round(max(measure(ds, w, a.samples) for _ in range(2)), 1) for w in (1, 2)}
        report = {
            "benchmark": "data_throughput",
            "dataset": str(a.dataset)
            if a.dataset
            else f"synthetic {a.image_size}px, 2 H.264 cameras, 2000 frames",
            "cameras": ds.camera_keys,
            "image_size": a.image_size,
            "batch_size": 8,
            "chunk_size": 50,
            "samples": a.samples,
            "order": "random (seeded)",
            "samples_per_s_by_workers": results,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        }
    write_json_atomic(OUT, report, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
