"""ONNX export benchmark: onnxruntime (CPU) vs shallowpi's engine, and the cost of exporting a full-size model.

    nice python benchmarks/export_latency.py                   # 2 threads each, 20 timed calls per runner
    nice python benchmarks/export_latency.py --skip-full-size  # latency part only

Latency: the "mid" π0.5 config at depths 18 and 6 (random weights) and the bundled Meta-World teacher, fp32,
batch 1, in one process with the same inputs (mid: 3 camera slots of which 1 is masked, 48 prompt tokens of
which 20 are valid, chunk 50, 10 Euler steps; the export drops the masked slot as the engine skips it).
Calls alternate between the two runtimes. Each pair's max |actions difference| is recorded (same noise).
Both runtimes share this process, which slows torch (onnxruntime's spinning threads): for latency,
benchmarks/engine_vs_ort.py times each runtime in a process of its own (issue 27).
Full size: π0.5 at depth 6 (SigLIP So400m, Gemma 2B / 300M widths, random weights) exported in float16,
in a child process whose peak RSS is the export's peak memory; a second child loads it in onnxruntime.
Writes benchmarks/results/export_latency.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from shallowpi.bench import make_inputs, write_json
from shallowpi.bench.results import environment, summary
from shallowpi.export.graphs import prefix_inputs
from shallowpi.export.onnx_export import ExportOptions, export_onnx, random_model
from shallowpi.infer.engine import InferenceEngine
from shallowpi.model import PiModel, load_model
from shallowpi.model.config import pi05, preset
from shallowpi.onnx_runtime.runner import OnnxRunner
from shallowpi.paths import portable_path

RESULTS = Path(__file__).resolve().parent / "results"
TEACHER = Path(__file__).resolve().parents[1] / "src" / "shallowpi" / "assets" / "teacher_metaworld"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def compare(label: str, model: PiModel, cameras: int, lang: int, work: Path, args) -> dict:
    """Export `model`, then time engine and onnxruntime calls alternately on the same inputs."""
    cfg = model.config
    x = make_inputs(cfg, batch=1, cameras=cameras, lang_tokens=lang, device="cpu")
    slots = tuple(cfg.cameras[:cameras])
    t0 = time.perf_counter()
    out = export_onnx(model, work / label, ExportOptions(cameras=slots))
    export_s = time.perf_counter() - t0
    runner = OnnxRunner(out, threads=args.threads)
    engine = InferenceEngine(model, batch_size=1)
    obs, noise = x.observation, x.noise
    state = obs.state.numpy() if cfg.variant == "pi0" else None
    ort_args = (*(t.numpy() for t in prefix_inputs(obs, range(cameras))), state)  # the exported slots
    eng = lambda: engine.sample_actions(obs, noise=noise)
    ort = lambda: runner.sample(*ort_args, noise=noise.numpy())
    diff = float(np.abs(eng().numpy() - ort()).max())
    times: dict[str, list[float]] = {"engine": [], "onnxruntime": []}
    for _ in range(args.warmup):
        eng(), ort()
    for _ in range(args.iters):
        for name, fn in (("engine", eng), ("onnxruntime", ort)):
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1e3)
    lat = {k: summary(v) for k, v in times.items()}
    r = {
        "label": label,
        "depth": cfg.depth,
        "export_s": export_s,
        "max_abs_diff": diff,
        "latency_ms": lat,
        "onnxruntime_over_engine": lat["onnxruntime"]["median"] / lat["engine"]["median"],
    }
    print(
        f"{label:<10} engine {lat['engine']['median']:7.1f} ms  onnxruntime {lat['onnxruntime']['median']:7.1f} ms"
        f"  ratio {r['onnxruntime_over_engine']:.2f}  |diff| {diff:.1e}  export {export_s:.0f} s",
        flush=True,
    )
    return r


def full_size_child(out: str) -> None:
    """Child process: build π0.5 depth 6 (random weights), export fp16; prints JSON on the last line."""
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    model = random_model(pi05().with_depth(6))
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    export_onnx(model, out, ExportOptions(dtype="float16"), inplace=True)
    export_s = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in Path(out).iterdir())
    print(json.dumps({"build_s": build_s, "export_s": export_s, "peak_rss_mb": _peak_rss_mb(),
                      "parameters": params, "files_mb": size / 2**20}))  # fmt: skip


def load_child(out: str) -> None:
    t0 = time.perf_counter()
    OnnxRunner(out, threads=2)
    print(json.dumps({"load_s": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb()}))


def _child(mode: str, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, mode, str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch threads and onnxruntime intra-op threads")
    ap.add_argument("--skip-full-size", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "export_latency.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = vars(args) | {"out": portable_path(args.out)}
    result: dict = {"environment": environment(torch.device("cpu")), "settings": settings, "runs": []}
    result["complete"] = False  # rewritten after every stage: a run cut short keeps what it measured
    import onnxruntime

    result["environment"]["onnxruntime"] = onnxruntime.__version__
    with tempfile.TemporaryDirectory(prefix="shallowpi-export-bench-") as tmp:
        work = Path(tmp)
        for depth in (18, 6):
            torch.manual_seed(0)
            model = PiModel(preset("mid", depth=depth)).eval()
            result["runs"].append(compare(f"mid_d{depth}", model, 2, 20, work, args))
            write_json(result, args.out)
            del model
        teacher = load_model(TEACHER)
        result["runs"].append(compare("teacher", teacher, 2, 20, work, args))
        write_json(result, args.out)
        if not args.skip_full_size:
            out = work / "pi05_d6_fp16"
            full = _child("--full-size-child", out)
            full.update({f"ort_{k}": v for k, v in _child("--load-child", out).items()})
            result["full_size_pi05_d6_fp16"] = full
            print(
                f"full-size π0.5 depth 6 fp16: {full['parameters'] / 1e9:.2f} B parameters, export "
                f"{full['export_s']:.0f} s (+{full['build_s']:.0f} s to build), peak RSS {full['peak_rss_mb']:.0f} MB, "
                f"files {full['files_mb']:.0f} MB; onnxruntime load {full['ort_load_s']:.0f} s, "
                f"peak RSS {full['ort_peak_rss_mb']:.0f} MB"
            )
    result["complete"] = True
    print(f"wrote {write_json(result, args.out)}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--full-size-child":
        full_size_child(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "--load-child":
        load_child(sys.argv[2])
    else:
        main()
