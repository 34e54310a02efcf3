"""Runners (one model in one mode, as a call) and their interleaved timing.

Timed calls are interleaved (call i of every runner, then call i + 1, ...), so load from other processes hits
every runner alike. Timing: CPU wall clock (time.perf_counter); CUDA events on the current stream. Stage
times (vision, prefix, denoise) come from marks the engine sets between stages, so reference modes report
totals only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from shallowpi.bench.inputs import BenchInputs
from shallowpi.bench.settings import BenchSettings
from shallowpi.bench.students import compress_prefix, model_label, student_depths
from shallowpi.infer.engine import STAGES, InferenceEngine
from shallowpi.model.config import PiConfig, preset
from shallowpi.model.pi import PiModel


class Clock:
    """Marks stage boundaries of one call: perf_counter on CPU, CUDA events on GPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[str, object]] = []

    def _now(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def start(self) -> None:
        self.marks = [("start", self._now())]

    def mark(self, name: str) -> None:
        self.marks.append((name, self._now()))

    def elapsed_ms(self) -> dict[str, float]:
        """-> {"total": ms, stage: ms, ...} for the marks set since start()."""
        if self.cuda:
            torch.cuda.synchronize()
            diff = lambda a, b: a.elapsed_time(b)
        else:
            diff = lambda a, b: (b - a) * 1e3
        out = {"total": diff(self.marks[0][1], self.marks[-1][1])}
        for (_, a), (name, b) in zip(self.marks, self.marks[1:], strict=False):
            if name in STAGES:
                out[name] = diff(a, b)
        return out


@dataclass
class Runner:
    name: str
    mode: str
    config: PiConfig
    model: PiModel
    call: Callable[[Callable[[str], None] | None], torch.Tensor]  # marks -> actions
    engine: InferenceEngine | None = None
    build_s: float = 0.0  # building the engine (folding included)


def time_runners(runners: list[Runner], *, warmup: int, iters: int, device: torch.device) -> dict[str, dict]:
    """Interleaved timing: -> name -> {"total": [ms...], "vision": [...], ...}."""
    clock = Clock(device)
    for r in runners:
        for _ in range(warmup):
            r.call(None)
    samples: dict[str, dict[str, list[float]]] = {r.name: {} for r in runners}
    for _ in range(iters):
        for r in runners:
            clock.start()
            r.call(clock.mark if r.engine is not None else None)
            clock.mark("end")
            for k, v in clock.elapsed_ms().items():
                samples[r.name].setdefault(k, []).append(v)
    return samples


def make_runner(name: str, mode: str, model: PiModel, s: BenchSettings, inputs: BenchInputs) -> Runner:
    cfg = model.config
    obs = inputs.observation
    kw = {"noise": inputs.noise, "num_steps": s.num_steps}
    if mode == "reference":
        return Runner(name, mode, cfg, model, lambda marks: model.sample_actions(obs, **kw))
    if mode == "reference_nocompact":
        return Runner(
            name,
            mode,
            cfg,
            model,
            lambda marks: model.sample_trace(obs, **kw, compact=False, keep_trace=False).actions,
        )
    t0 = time.perf_counter()
    engine = InferenceEngine(
        model,
        batch_size=s.batch_size,
        device=s.device,
        dtype=s.dtype,
        compile=mode.startswith("compiled"),
        cuda_graph="cuda_graph" in mode,
        compact=mode != "engine_nocompact",
        fold="unfolded" not in mode,
    )
    build_s = time.perf_counter() - t0
    return Runner(
        name, mode, cfg, model, lambda marks: engine.sample_actions(obs, **kw, marks=marks), engine, build_s
    )


def build_models(s: BenchSettings) -> list[tuple[str, PiModel]]:
    """-> [(label, model)], deepest first for presets; the students' prefix compressed as `s` asks."""
    from shallowpi.model.checkpoint import load_model

    device = torch.device(s.device)
    out = []
    if s.policies:
        for path in s.policies:
            model = load_model(path, device=device, dtype=s.dtype)
            if s.chunk:
                model.config.chunk_size = s.chunk  # latency what-if: the weights do not depend on the chunk
            out.append((Path(path).name, model.eval()))
        return out
    base = preset(s.preset)
    overrides = {}
    if s.variant:
        overrides["variant"] = s.variant
    if s.chunk:
        overrides["chunk_size"] = s.chunk
    if s.variant and s.variant != base.variant:
        overrides["tokenizer_max_length"] = 48 if s.variant == "pi0" else base.tokenizer_max_length
    depths = sorted(set(s.depths or [base.depth]), reverse=True)
    students = student_depths(depths)
    for depth in depths:
        torch.manual_seed(s.seed)
        cfg = preset(s.preset, depth=depth, **overrides)
        if depth in students:
            cfg = compress_prefix(cfg, s.image_merge, s.vision_depth)
        model = PiModel(cfg).to(device).eval()
        if s.dtype == "bfloat16":
            model.to_bfloat16()
        out.append((model_label(s.preset, cfg), model))
    return out
