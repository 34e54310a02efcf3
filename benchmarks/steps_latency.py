"""Few-step latency on the "mid" π0.5 config (issue 16's latency target): teacher L18 @ 10 steps against L6
@ 10 / 2 / 1, random weights (weights do not change latency), the engine, one process, same inputs, with the
vision / prefix / denoise split of every call.

    nice python benchmarks/steps_latency.py                 # 2 threads, 20 timed calls each
Writes benchmarks/results/steps_latency.json (shallowpi bench's JSON; its ratios hold L6@K / teacher@10).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from shallowpi.bench import BenchSettings, run_bench, write_json
from shallowpi.model import PiModel, preset, save_model
from shallowpi.study.pipeline import save_with_steps

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ks", default="2,1", help="L6 step counts besides 10")
    ap.add_argument("--out", default=str(RESULTS / "steps_latency.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="shallowpi-steps-bench-") as tmp:
        work = Path(tmp)
        policies = []
        for depth in (18, 6):
            torch.manual_seed(0)
            policies.append(str(save_model(PiModel(preset("mid", depth=depth)), work / f"L{depth}_K10")))
        for k in (int(x) for x in args.ks.split(",")):
            policies.append(str(save_with_steps(policies[1], k, work / f"L6_K{k}")))
        settings = BenchSettings(policies=policies, modes=["engine"], iters=args.iters, threads=args.threads)
        result = run_bench(settings)
    result["settings"]["policies"] = [Path(p).name for p in policies]  # temporary folders, gone: names only
    for r in result["ratios"]:  # every model against the deepest (the teacher @10), as shallowpi bench does
        if r["kind"] == "model":
            print(f"{r['run']:<16} {r['latency_median_ratio']:.2f} x {r['baseline']}")
    print(f"wrote {write_json(result, args.out)}")


if __name__ == "__main__":
    main()
