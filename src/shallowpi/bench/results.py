"""What a benchmark result reports beside the raw runs: latency summaries, ratios, the environment; and
its atomic JSON file."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

import torch

from shallowpi.atomic import write_json_atomic


def summary(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, max(0, round(0.9 * (len(xs) - 1))))]
    return {
        "median": statistics.median(xs),
        "p90": p90,
        "mean": statistics.fmean(xs),
        "min": xs[0],
        "max": xs[-1],
        "n": len(xs),
    }


def ratios(runs: list[dict]) -> list[dict]:
    """Within each mode: every model against the deepest one; within each model: every mode against the first."""
    out = []
    for mode in dict.fromkeys(r["mode"] for r in runs):
        group = [r for r in runs if r["mode"] == mode]
        base = max(group, key=lambda r: (r["depth"], r["params"]))
        for r in group:
            if r is not base:
                out.append(_ratio(r, base, "model"))
    for depth_name in dict.fromkeys(r["name"].rsplit("/", 1)[0] for r in runs):
        group = [r for r in runs if r["name"].rsplit("/", 1)[0] == depth_name]
        for r in group[1:]:
            out.append(_ratio(r, group[0], "mode"))
    return out


def _ratio(r: dict, base: dict, kind: str) -> dict:
    return {
        "kind": kind,
        "run": r["name"],
        "baseline": base["name"],
        "latency_median_ratio": r["latency_ms"]["median"] / base["latency_ms"]["median"],
        "latency_p90_ratio": r["latency_ms"]["p90"] / base["latency_ms"]["p90"],
        "flops_ratio": r["flops"]["total"] / base["flops"]["total"],
    }


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else platform's guess): CPU timings differ by model, e.g.
    with or without AMX or avx512_bf16, so a result says which one produced it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: torch.device) -> dict:
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def write_json(result: dict, path: str | Path) -> Path:
    """Atomic write (temp file + rename): a crash never leaves half a JSON behind."""
    return write_json_atomic(path, result)
