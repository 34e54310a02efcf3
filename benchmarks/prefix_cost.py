"""What a cheaper prefix buys: full-size π0.5 (random weights, bf16, CPU), teacher L18 at 10 steps against an
L6 2-step student whose image tokens are merged 2 x 2 (256 -> 64 per camera) and whose SigLIP tower keeps 14
of its 27 layers, with the rows in between (L6 at 10 and 2 steps, + merge only, + tower only).

    nice python benchmarks/prefix_cost.py                 # 2 threads, 1 warm-up + 3 timed calls per row
    python benchmarks/prefix_cost.py --flops-only         # per-stage FLOPs from the configs, no model built
    python benchmarks/prefix_cost.py --preset tiny --out outputs/prefix_cost_tiny.json   # the same rows, seconds

Inputs: 2 cameras + 1 masked slot, 20 valid prompt tokens (of 200), chunk 50. Per row: FLOPs per stage
(vision, prefix, denoise; `shallowpi.infer.flops`) and latency per stage, every row timed in this one
process with calls interleaved (`shallowpi bench`'s machinery: `run_bench`), median. Full size in bf16 is
seconds per call on a 2-core CPU, hence 3 timed calls after 1 warm-up (the JSON says so). The students share
the teacher's tensors where shapes match (`shared_random_models`), so that all rows fit in memory; the
default mode is the engine on the model's own modules (`engine_unfolded`: the folded engine would hold a
second copy of every row's weights). Targets reported: student FLOPs <= 0.15 of the teacher's, CPU bf16
latency <= 0.20. Writes benchmarks/results/prefix_cost.json (--flops-only: prefix_cost_flops.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from shallowpi.atomic import write_json_atomic
from shallowpi.bench import BenchSettings, run_bench
from shallowpi.bench.students import compress_prefix, shared_random_models
from shallowpi.bench.suite import prefix_fields
from shallowpi.infer.flops import call_flops
from shallowpi.model.config import PiConfig, preset
from shallowpi.paths import without_option

RESULTS = Path(__file__).resolve().parent / "results"
CAMERAS, LANG_TOKENS = 2, 20
TARGETS = {"flops_ratio_max": 0.15, "latency_ratio_max": 0.20}
TIMING_NOTE = (
    "{iters} timed calls after {warmup} warm-up per row (full-size bf16 on a 2-core CPU is seconds per call), "
    "calls interleaved across rows in one process, median; {threads} torch threads"
)


@dataclass(frozen=True)
class Row:
    name: str
    depth: int
    steps: int
    merge: int | None = None
    vision_depth: int | None = None

    def config(self, preset_name: str, chunk: int | None) -> PiConfig:
        cfg = preset(preset_name, depth=self.depth)
        if chunk:
            cfg = dataclasses.replace(cfg, chunk_size=chunk)
        cfg = compress_prefix(cfg, self.merge, self.vision_depth)
        return dataclasses.replace(cfg, num_inference_steps=self.steps)  # each row samples its own steps


def reproduce_command(argv: list[str]) -> str:
    """The command that gives these numbers; where it wrote them (--out) is not part of it."""
    return " ".join(["python benchmarks/prefix_cost.py", *without_option(argv, "--out")])


def rows(preset_name: str, depth: int | None, vision_depth: int | None, merge: int) -> list[Row]:
    """Teacher, then the student's compressions one at a time. Defaults: L6 of 18 and 14 of 27 SigLIP layers
    for full size; the same fractions (at least 1) for a smaller preset."""
    base = preset(preset_name)
    depth = depth or max(1, round(base.depth / 3))
    vision_depth = vision_depth or max(1, round(base.vision.depth * 14 / 27))
    t, s = base.depth, depth
    return [
        Row(f"teacher_L{t}_K10", t, 10),
        Row(f"L{s}_K10", s, 10),
        Row(f"L{s}_K2", s, 2),
        Row(f"L{s}_K2_merge{merge}", s, 2, merge=merge),
        Row(f"L{s}_K2_vision{vision_depth}", s, 2, vision_depth=vision_depth),
        Row(f"L{s}_K2_merge{merge}_vision{vision_depth}", s, 2, merge=merge, vision_depth=vision_depth),
    ]


def lang_tokens(cfg: PiConfig) -> int:
    return min(LANG_TOKENS, cfg.tokenizer_max_length)  # tiny prompts are 16 tokens


def flops_table(configs: list[tuple[str, PiConfig]], path: str) -> list[dict]:
    """Per row: its prefix, steps and per-stage FLOPs (the bench's count for `path`), and / the teacher's."""
    out = []
    for name, cfg in configs:
        f = call_flops(cfg, cameras=CAMERAS, lang_tokens=lang_tokens(cfg), path=path)
        out.append({"name": name, "depth": cfg.depth, "steps": cfg.num_inference_steps, **prefix_fields(cfg),
                    "flops": f})  # fmt: skip
    teacher = out[0]["flops"]
    for r in out:
        r["flops_ratio"] = {k: r["flops"][k] / teacher[k] for k in teacher}
    return out


def add_latency(table: list[dict], result: dict) -> None:
    """Each row's median latency (total and per stage) from the bench result, and / the teacher's."""
    by_name = {r["name"].rsplit("/", 1)[0]: r for r in result["runs"]}
    for r in table:
        run = by_name[r["name"]]
        r["latency_ms"] = {"total": run["latency_ms"]["median"]}
        r["latency_ms"] |= {k: v["median"] for k, v in (run["stages_ms"] or {}).items()}
        r["flops_counted"] = run["flops_counted"]
    teacher = table[0]["latency_ms"]
    for r in table:
        r["latency_ratio"] = {k: v / teacher[k] for k, v in r["latency_ms"].items() if k in teacher}


def verdict(table: list[dict]) -> dict:
    student = table[-1]
    out = {"student": student["name"], **TARGETS, "flops_ratio": student["flops_ratio"]["total"]}
    out["flops_met"] = out["flops_ratio"] <= TARGETS["flops_ratio_max"]
    if "latency_ratio" in student:
        out["latency_ratio"] = student["latency_ratio"]["total"]
        out["latency_met"] = out["latency_ratio"] <= TARGETS["latency_ratio_max"]
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="pi05", help="pi05 (the measurement) or tiny (a check in seconds)")
    ap.add_argument(
        "--depth", type=int, default=None, help="student layers (default: a third of the preset's)"
    )
    ap.add_argument("--vision-depth", type=int, default=None, help="student SigLIP layers (default 14 of 27)")
    ap.add_argument("--merge", type=int, default=2, help="image token merge of the student")
    ap.add_argument("--chunk", type=int, default=None, help="action chunk (default: the preset's, 50)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--mode", default="engine_unfolded", choices=["engine_unfolded", "engine"])
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--flops-only", action="store_true", help="FLOPs from the configs; builds and times nothing"
    )
    ap.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/prefix_cost[_flops].json)"
    )
    args = ap.parse_args(argv)

    table_rows = rows(args.preset, args.depth, args.vision_depth, args.merge)
    configs = [(r.name, r.config(args.preset, args.chunk)) for r in table_rows]
    path = "unfolded" if args.mode == "engine_unfolded" else "engine"
    table = flops_table(configs, path)
    out = {
        "benchmark": "prefix_cost",
        "command": reproduce_command(sys.argv[1:] if argv is None else argv),
        "preset": args.preset,
        "inputs": {
            "cameras_valid": CAMERAS,
            "camera_slots": len(configs[0][1].cameras),
            "lang_tokens_valid": lang_tokens(configs[0][1]),
            "chunk": configs[0][1].chunk_size,
        },  # fmt: skip
        "dtype": args.dtype,
        "mode": args.mode,
        "flops_path": path,
        "rows": table,
    }
    if not args.flops_only:
        settings = BenchSettings(
            preset=args.preset,
            device="cpu",
            dtype=args.dtype,
            cameras=CAMERAS,
            lang_tokens=lang_tokens(configs[0][1]),
            chunk=args.chunk,
            modes=[args.mode],
            warmup=args.warmup,
            iters=args.iters,
            threads=args.threads,
            count_flops=args.preset != "pi05",  # torch's counter costs a full-size call per row
        )
        for _, cfg in configs:
            cfg.dtype = args.dtype
        models = shared_random_models(configs)
        out["timing_note"] = TIMING_NOTE.format(warmup=args.warmup, iters=args.iters, threads=args.threads)
        result = run_bench(settings, models=models)
        add_latency(table, result)
        out["bench"] = result  # the whole `shallowpi bench` JSON: environment, memory, every sample summary
    out["targets"] = verdict(table)
    default = RESULTS / ("prefix_cost_flops.json" if args.flops_only else "prefix_cost.json")
    written = write_json_atomic(args.out or default, out)
    for r in table:
        lat = r.get("latency_ratio", {}).get("total")
        lat_text = f"  latency x{lat:.3f}" if lat is not None else ""
        print(
            f"{r['name']:<28} {r['flops']['total'] / 1e9:9.1f} GFLOP  x{r['flops_ratio']['total']:.3f}{lat_text}"
        )
    print(json.dumps(out["targets"]))
    print(f"wrote {written.name}")
    return out


if __name__ == "__main__":
    main()
