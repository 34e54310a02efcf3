"""Helper of benchmarks/trt_build.sh: export the graphs TensorRT builds, write trtexec input files, and
collect trtexec's timings into one JSON.

    python benchmarks/trt_prepare.py export OUTDIR [--models teacher,pi05_d6]
    python benchmarks/trt_prepare.py summarize OUTDIR

export: OUTDIR/<model>_<dtype>/ (a `shallowpi export` folder) and OUTDIR/<model>_<dtype>/inputs/<graph>/*.bin
(raw little-endian tensors for `trtexec --loadInputs`: valid token ids and all-true masks, because trtexec's
own random inputs would index past the vocabulary). Models: the bundled Meta-World teacher (fp32 and fp16)
and a full-size π0.5 at depth 6 with random weights (fp16; needs ~12 GB of RAM for a few minutes).
summarize: reads OUTDIR/*/trtexec_<graph>_<mode>.log and writes OUTDIR/trt_timing.json with the median GPU
compute time per graph and the policy latency prefix + steps x denoise.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

TEACHER = Path(__file__).resolve().parents[1] / "src" / "shallowpi" / "assets" / "teacher_metaworld"


def _inputs(export: Path) -> None:
    from shallowpi.onnx_runtime.manifest import read_manifest

    m = read_manifest(export)
    rng = np.random.default_rng(0)
    for graph in ("prefix", "denoise"):
        d = export / "inputs" / graph
        d.mkdir(parents=True, exist_ok=True)
        for s in m.specs(graph, "inputs"):
            if s.dtype == "bool":
                a = np.ones(s.shape, dtype=bool)
            elif s.dtype == "int64":
                a = np.full(s.shape, 2, dtype=np.int64)  # BOS: a valid id in every vocabulary
            elif s.name == "t":
                a = np.full(s.shape, 0.5, dtype=np.float32)
            else:
                a = rng.standard_normal(s.shape).astype(s.dtype)
                if s.name == "images":
                    a = np.clip(a, -1, 1)
            a.tofile(d / f"{s.name}.bin")


def export(out: Path, models: list[str]) -> None:
    import torch

    from shallowpi.export.onnx_export import ExportOptions, export_onnx, export_policy, random_model
    from shallowpi.model.config import pi05

    torch.set_num_threads(max(1, torch.get_num_threads()))
    for name in models:
        if name == "teacher":
            for dtype in ("float32", "float16"):
                _inputs(export_policy(TEACHER, out / f"teacher_{dtype}", ExportOptions(dtype=dtype)))
        elif name == "pi05_d6":
            model = random_model(pi05().with_depth(6))
            path = export_onnx(model, out / "pi05_d6_float16", ExportOptions(dtype="float16"), inplace=True)
            del model
            _inputs(path)
        else:
            raise SystemExit(f"unknown model {name!r}; choose from teacher, pi05_d6")
        print(f"exported {name}", flush=True)


_MEDIAN = re.compile(
    r"GPU Compute Time: min = [\d.]+ ms, max = [\d.]+ ms, mean = [\d.]+ ms, median = ([\d.]+) ms"
)


def summarize(out: Path) -> None:
    result: dict = {}
    for log in sorted(out.glob("*/trtexec_*.log")):
        model = log.parent.name
        graph, mode = log.stem.removeprefix("trtexec_").split("_", 1)
        text = log.read_text(errors="replace")
        m = _MEDIAN.search(text)
        entry = result.setdefault(model, {}).setdefault(mode, {})
        entry[graph] = {"median_ms": float(m.group(1))} if m else {"error": text.strip().splitlines()[-5:]}
    for model, modes in result.items():
        steps = json.loads((out / model / "manifest.json").read_text())["schedule"]["num_steps"]
        for entry in modes.values():
            if all("median_ms" in entry.get(g, {}) for g in ("prefix", "denoise")):
                entry["policy_ms"] = entry["prefix"]["median_ms"] + steps * entry["denoise"]["median_ms"]
                entry["num_steps"] = steps
    (out / "trt_timing.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["export", "summarize"])
    ap.add_argument("out")
    ap.add_argument("--models", default="teacher,pi05_d6")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.action == "export":
        export(out, [m for m in args.models.split(",") if m])
    else:
        summarize(out)


if __name__ == "__main__":
    main()
