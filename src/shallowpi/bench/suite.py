"""`run_bench`: every model x mode of one `BenchSettings` in one process, on the same inputs -> one result."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch

from shallowpi.bench.inputs import BenchInputs, make_inputs
from shallowpi.bench.memory import measure_peak, memory_method
from shallowpi.bench.results import environment, ratios, summary
from shallowpi.bench.runners import build_models, make_runner, time_runners
from shallowpi.bench.settings import SCHEMA, BenchSettings
from shallowpi.errors import UserError
from shallowpi.infer.engine import STAGES
from shallowpi.infer.flops import call_flops, count_engine_flops, count_flops
from shallowpi.model.config import PiConfig
from shallowpi.model.pi import PiModel
from shallowpi.paths import portable_path


def run_bench(
    s: BenchSettings,
    log: Callable[[str], None] = print,
    models: list[tuple[str, PiModel]] | None = None,
) -> dict:
    """`models`: [(label, model)] built by the caller (a benchmark's own set, e.g. students sharing
    weights), instead of those `s` names (`build_models`)."""
    s.validate()
    if s.threads:
        torch.set_num_threads(s.threads)
    device = torch.device(s.device)
    models = models if models is not None else build_models(s)
    cfg0 = models[0][1].config
    slots = len(cfg0.cameras)
    cameras = s.cameras if s.cameras is not None else (slots - 1 if slots > 1 else 1)
    lang = s.lang_tokens if s.lang_tokens is not None else min(20, cfg0.tokenizer_max_length)
    steps = s.num_steps or cfg0.num_inference_steps
    inputs = make_inputs(
        cfg0, batch=s.batch_size, cameras=cameras, lang_tokens=lang, device=device, seed=s.seed
    )
    for _, m in models[1:]:
        c = m.config
        if (c.cameras, c.vision.image_size, c.tokenizer_max_length, c.chunk_size) != (
            cfg0.cameras,
            cfg0.vision.image_size,
            cfg0.tokenizer_max_length,
            cfg0.chunk_size,
        ):
            raise UserError(
                "compared models must share camera slots, image size, prompt length and chunk size"
            )

    modes = s.modes if "torch" in s.backends else []
    runners = [make_runner(f"{label}/{mode}", mode, m, s, inputs) for label, m in models for mode in modes]
    log(
        f"bench: {len(runners)} runner(s) on {device}, {s.dtype}, batch {s.batch_size}, {cameras}/{slots} cameras, "
        f"{lang} prompt tokens, {s.num_steps or 'each model its own'} steps; warm-up {s.warmup}, {s.iters} timed calls each"
    )

    runs, outputs = [], {}
    for r in runners:
        box: dict = {}
        # First call (cold: builds caches / compiles / captures), measured for peak memory.
        t0 = time.perf_counter()
        mem = measure_peak(lambda r=r, box=box: box.update(out=r.call(None)), device)
        first_call_s = time.perf_counter() - t0
        outputs[r.name] = box["out"]
        first = next(x for x in runners if x.model is r.model)  # this model's first mode
        diff = None if first is r else float((box["out"].float() - outputs[first.name].float()).abs().max())
        compact = "nocompact" not in r.mode
        r_steps = s.num_steps or r.config.num_inference_steps  # each model samples with its own schedule
        static = r.engine is not None and not r.engine.trim_language  # language padding kept
        flops = call_flops(
            r.config,
            batch=s.batch_size,
            cameras=cameras if compact else slots,
            lang_tokens=lang if compact and not static else r.config.tokenizer_max_length,
            steps=r_steps,
            cached_conditioning=r.engine is not None,
            path=_flops_path(r.mode),
        )
        counted = None
        if s.count_flops:
            if r.engine is not None:
                counted = count_engine_flops(r.engine, inputs.observation, inputs.noise, r_steps)
            else:
                counted = {"total": count_flops(lambda r=r: r.call(None))}
        params = sum(p.numel() for p in r.model.parameters())
        weights = sum(p.numel() * p.element_size() for p in r.model.parameters())
        runs.append(
            {
                "name": r.name,
                "mode": r.mode,
                "variant": r.config.variant,
                "depth": r.config.depth,
                **prefix_fields(r.config),
                "steps": r_steps,
                "time_grid": r.config.time_grid(s.num_steps),
                "params": params,
                "weights_mb": weights / 2**20,
                "flops": flops,
                "flops_counted": counted,
                "memory": mem,
                "max_abs_diff_vs_first_mode": diff,
                "backend": "torch",
                "build_s": r.build_s,
                "first_call_s": first_call_s,
                "warmup_s": r.build_s + first_call_s,
                "pid": os.getpid(),
            }
        )
        log(f"  prepared {r.name}: {flops['total'] / 1e9:.2f} GFLOP/call, peak +{mem['delta_mb']:.0f} MiB")

    samples = time_runners(runners, warmup=s.warmup, iters=s.iters, device=device)
    for run in runs:
        smp = samples[run["name"]]
        run["latency_ms"] = summary(smp["total"])
        run["stages_ms"] = {k: summary(smp[k]) for k in STAGES if k in smp} or None
        log(
            f"  {run['name']:<40} median {run['latency_ms']['median']:8.1f} ms  p90 {run['latency_ms']['p90']:8.1f} ms"
        )
    if "onnxruntime" in s.backends:
        for label, m in models:
            first = next((o for name, o in outputs.items() if name.startswith(f"{label}/")), None)
            run = onnxruntime_run(label, m, s, inputs, cameras, lang, first)
            runs.append(run)
            log(
                f"  {run['name']:<40} median {run['latency_ms']['median']:8.1f} ms  p90 "
                f"{run['latency_ms']['p90']:8.1f} ms  (own process, warm-up {run['warmup_s']:.1f} s)"
            )

    result = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment(device),
        "settings": {
            **dataclasses.asdict(s),
            "policies": [portable_path(p) for p in s.policies],  # as results record paths
            "camera_slots": slots,
            "cameras_valid": cameras,
            "lang_tokens_valid": lang,
            "prompt_length": cfg0.tokenizer_max_length,
            "num_steps": steps,  # resolved: the first model's when each samples with its own
            "chunk": cfg0.chunk_size,
        },
        "timing": "CUDA events" if device.type == "cuda" else "time.perf_counter wall clock",
        "memory_method": memory_method(device),
        "runs": runs,
        "ratios": ratios(runs),
    }
    return result


def prefix_fields(cfg: PiConfig) -> dict:
    """What a run records of its model's prefix: image tokens per camera (SigLIP's, merged) and the tower."""
    v = cfg.vision
    return {
        "image_merge": v.merge,
        "image_tokens": v.num_tokens,
        "vision_depth": v.depth,
        "vision_layer_map": cfg.vision_layer_map,
    }


def _flops_path(mode: str) -> str:
    if mode.startswith("compiled"):
        return "compiled"
    return "unfolded" if "unfolded" in mode else "engine"


def onnxruntime_run(
    label, model, s: BenchSettings, inputs: BenchInputs, cameras: int, lang: int, first
) -> dict:
    """Export `model` (the valid camera slots, the whole prompt), then time `OnnxRunner.sample` on the same
    inputs in a child process of its own (`shallowpi.onnx_runtime.timing`)."""
    import numpy as np

    from shallowpi.export.onnx_export import ExportOptions, export_onnx

    cfg = model.config
    steps = s.num_steps or cfg.num_inference_steps
    with tempfile.TemporaryDirectory(prefix="shallowpi-bench-onnx-") as tmp:
        opts = ExportOptions(
            batch_size=s.batch_size, cameras=tuple(cfg.cameras[:cameras]), num_steps=s.num_steps
        )
        t0 = time.perf_counter()
        export = export_onnx(model, Path(tmp) / "onnx", opts)
        export_s = time.perf_counter() - t0
        obs = inputs.observation
        arrays = {
            "images": obs.images[:, :cameras].cpu().numpy(),  # (B, cameras, 3, H, W)
            "image_masks": obs.image_masks[:, :cameras].cpu().numpy(),
            "tokens": obs.tokens.cpu().numpy(),
            "token_masks": obs.token_masks.cpu().numpy(),
            "noise": inputs.noise.cpu().numpy(),
        }
        if cfg.variant == "pi0":
            arrays["state"] = obs.state.cpu().numpy()
        np.savez(Path(tmp) / "inputs.npz", **arrays)
        spec = {"export": str(export), "inputs": str(Path(tmp) / "inputs.npz"), "warmup": s.warmup,
                "iters": s.iters, "threads": s.threads}  # fmt: skip
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "shallowpi.onnx_runtime.timing", str(Path(tmp) / "spec.json")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"onnxruntime timing of {label} failed:\n{proc.stderr[-4000:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    actions = np.asarray(got.pop("actions"))
    diff = None if first is None else float(np.abs(actions - first.float().cpu().numpy()).max())
    flops = call_flops(
        cfg,
        batch=s.batch_size,
        cameras=cameras,
        lang_tokens=cfg.tokenizer_max_length,
        steps=steps,
        path="compiled",
    )  # fmt: skip  (the folded graph, prompt padding kept)
    return {
        "name": f"{label}/onnxruntime",
        "mode": "onnxruntime",
        "variant": cfg.variant,
        "depth": cfg.depth,
        **prefix_fields(cfg),
        "steps": steps,
        "time_grid": cfg.time_grid(s.num_steps),
        "params": sum(p.numel() for p in model.parameters()),
        "weights_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
        "flops": flops,
        "flops_counted": None,
        "memory": {"peak_mb": got["peak_mb"], "delta_mb": max(got["peak_mb"] - got["rss_before_mb"], 0.0)},
        "max_abs_diff_vs_first_mode": diff,
        "latency_ms": summary(got["times_ms"]),
        "stages_ms": None,
        "backend": "onnxruntime",
        "build_s": got["build_s"],
        "first_call_s": got["first_call_s"],
        "warmup_s": got["warmup_s"],
        "export_s": export_s,
        "pid": got["pid"],
    }
