"""Cost of one distillation step (task + velocity KD + attention KD, frozen teacher forward included) vs a
task-only step of the same student on the same batch. Target: distill ≤ 1.5× task-only. Prints and writes
benchmarks/results/distill_throughput.json; never asserts on time.

    python benchmarks/distill_throughput.py                       # mid preset, 18 -> 6 layers, CPU or GPU
    python benchmarks/distill_throughput.py --preset pi05 --batch-size 8 --bf16   # full size, on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from shallowpi.device import default_device
from shallowpi.distill.data import MicroBatches, StreamPlan, SyntheticSource
from shallowpi.distill.losses import DistillLoss, DistillLossConfig, LossWeights
from shallowpi.distill.parallel import JointForward, freeze
from shallowpi.distill.student import make_student
from shallowpi.model import PiModel, preset
from shallowpi.paths import portable_path


def measure(student, losses: dict, batch, steps: int, warmup: int, autocast) -> dict:
    """Alternate one step of each loss per round, so load from other processes hits both alike."""
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    fwd = JointForward(student)
    cuda = batch.tokens.is_cuda
    times: dict[str, list[float]] = {name: [] for name in losses}
    peaks: dict[str, float] = {}
    for i in range(warmup + steps):
        for name, loss in losses.items():
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            with autocast:
                total, _ = loss(fwd, batch)
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
                peaks[name] = max(peaks.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**30)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    out = {}
    for name, ts in times.items():
        out[name] = {"step_s_median": sorted(ts)[len(ts) // 2], "step_s_all": ts}
        if cuda:
            out[name]["peak_gpu_mem_gib"] = peaks[name]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="mid")
    ap.add_argument("--variant", default="pi05")
    ap.add_argument("--teacher-depth", type=int, default=18)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "distill_throughput.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(default_device())
    torch.manual_seed(0)
    teacher = PiModel(preset(args.preset, variant=args.variant, depth=args.teacher_depth)).to(device).eval()
    teacher.requires_grad_(False)
    student = make_student(teacher, depth=args.depth).train()
    freeze(student, vision=False)
    cfg = student.config
    batch = MicroBatches(
        SyntheticSource(cfg, num_samples=args.batch_size),
        StreamPlan(args.batch_size, args.batch_size),
        cfg,
        0,
        1,
    )[0].to(device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if args.bf16 and device.type == "cuda" else nullcontext()
    )
    losses = {
        name: DistillLoss(student, t, DistillLossConfig(weights=weights, action_dim=4))
        for name, weights, t in (
            ("task_only", LossWeights(1, 0, 0), None),
            ("distill", LossWeights(1, 1, 1), teacher),
        )
    }
    results = measure(student, losses, batch, args.steps, args.warmup, autocast)
    for name, r in results.items():
        print(f"{name:10s} {r['step_s_median'] * 1e3:9.1f} ms/step")
    ratio = results["distill"]["step_s_median"] / results["task_only"]["step_s_median"]
    report = {
        "config": vars(args)
        | {"out": portable_path(args.out), "device": str(device), "layer_map": cfg.layer_map},
        "machine": torch.cuda.get_device_name()
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "results": results,
        "distill_over_task_only": ratio,
        "target_ratio": 1.5,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    print(f"distill / task-only = {ratio:.2f}x (target <= 1.5x); peak RSS {report['peak_rss_gib']:.2f} GiB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
