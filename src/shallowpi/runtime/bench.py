"""Latency, FLOPs and memory of `sample_actions`: several depths / policies / runtimes in one process.

Every runner gets the same inputs (same images, prompt and noise). Timed calls are interleaved (call i of
every runner, then call i + 1, ...), so load from other processes hits every runner alike and the ratios
stay meaningful on a shared machine.

Modes:
  reference            PiModel.sample_actions (default path: masked camera slots and shared padding skipped)
  reference_nocompact  PiModel.sample_trace(compact=False): every camera slot and padding token computed
  engine               InferenceEngine, eager
  engine_nocompact     InferenceEngine(compact=False)
  compiled             InferenceEngine(compile=True)
  cuda_graph           InferenceEngine(cuda_graph=True)            (CUDA only)
  compiled_cuda_graph  InferenceEngine(compile=True, cuda_graph=True)  (CUDA only)

Timing: CPU wall clock (time.perf_counter); CUDA events on the current stream. Stage times (vision, prefix,
denoise) come from marks the engine sets between stages, so reference modes report totals only.
Peak memory: CUDA torch.cuda.max_memory_allocated; CPU the kernel's peak resident set (VmHWM in
/proc/self/status, reset before the measured call through /proc/self/clear_refs, after glibc's malloc_trim
has returned freed heap pages; falls back to getrusage's ru_maxrss, which cannot be reset). Reported as
"peak" (whole process: the weights of every loaded model included) and "delta" (peak minus what was
resident/allocated just before the call: the call's working set, activations and caches). On CPU the delta
is a lower bound: pages the allocator kept from earlier calls are reused without raising the RSS.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from shallowpi.atomic import save_figure_atomic, write_json_atomic
from shallowpi.errors import UserError
from shallowpi.model.config import PiConfig, preset
from shallowpi.model.pi import PiModel
from shallowpi.runtime.engine import STAGES, InferenceEngine
from shallowpi.runtime.flops import call_flops, count_engine_flops, count_flops

MODES = (
    "reference",
    "reference_nocompact",
    "engine",
    "engine_nocompact",
    "compiled",
    "cuda_graph",
    "compiled_cuda_graph",
)
SCHEMA = "shallowpi.bench/1"


@dataclass
class BenchSettings:
    preset: str | None = "mid"  # model preset (random weights) when no policies are given
    variant: str | None = None  # override the preset's variant (pi0 | pi05)
    depths: list[int] = field(default_factory=list)  # empty: the preset's depth
    policies: list[str] = field(default_factory=list)  # pretrained folders (e.g. teacher and student)
    device: str = "cpu"
    dtype: str = "float32"
    batch: int = 1
    cameras: int | None = None  # valid camera slots (the rest are masked); None: all but one if > 1 slot
    lang_tokens: int | None = None  # valid prompt tokens; None: min(20, tokenizer_max_length)
    steps: int | None = None  # Euler steps; None: the config's
    chunk: int | None = None  # action chunk; None: the config's
    modes: list[str] = field(default_factory=lambda: ["reference", "engine"])
    warmup: int = 3
    iters: int = 20
    threads: int | None = None
    seed: int = 0
    count_flops: bool = True  # cross-check the analytic FLOPs with torch's counter (one extra call each)

    def validate(self) -> None:
        if not self.policies and not self.preset:
            raise UserError("give --policy PATH or --preset NAME")
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise UserError(f"unknown mode {bad[0]!r}; choose from {', '.join(MODES)}")
        if not self.modes:
            raise UserError("no modes to run")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device {self.device!r} asked for but CUDA is not available")
        if not self.device.startswith("cuda") and any("cuda_graph" in m for m in self.modes):
            raise UserError("cuda_graph modes need --device cuda")
        if self.dtype not in ("float32", "bfloat16"):
            raise UserError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.iters < 1 or self.warmup < 0 or self.batch < 1:
            raise UserError("iters and batch must be >= 1 and warmup >= 0")
        if any(d < 1 for d in self.depths):
            raise UserError(f"depths must be >= 1, got {self.depths}")
        if self.policies and self.depths:
            raise UserError("depths apply to presets; pass several --policy folders to compare checkpoints")


# inputs ------------------------------------------------------------------------------------------------------


def make_inputs(
    cfg: PiConfig, *, batch: int, cameras: int, lang_tokens: int, device, seed: int = 0
) -> dict[str, object]:
    """Deterministic random inputs: `cameras` valid slots (the others masked, image -1), `lang_tokens` valid."""
    if not 1 <= cameras <= len(cfg.cameras):
        raise UserError(f"cameras must be in [1, {len(cfg.cameras)}] (the model's slots), got {cameras}")
    if not 1 <= lang_tokens <= cfg.tokenizer_max_length:
        raise UserError(f"lang_tokens must be in [1, {cfg.tokenizer_max_length}], got {lang_tokens}")
    g = torch.Generator().manual_seed(seed)
    s = cfg.vision.image_size
    images, masks = [], []
    for i in range(len(cfg.cameras)):
        valid = i < cameras
        img = torch.rand(batch, 3, s, s, generator=g) * 2 - 1 if valid else -torch.ones(batch, 3, s, s)
        images.append(img.to(device))  # (B, 3, S, S) in [-1, 1]
        masks.append(torch.full((batch,), valid, dtype=torch.bool, device=device))
    tokens = torch.randint(1, min(cfg.vocab_size, 1000), (batch, cfg.tokenizer_max_length), generator=g)
    token_masks = torch.arange(cfg.tokenizer_max_length)[None].expand(batch, -1) < lang_tokens
    tokens = torch.where(token_masks, tokens, 0)
    return {
        "images": images,
        "img_masks": masks,
        "tokens": tokens.to(device),  # (B, L)
        "token_masks": token_masks.to(device),  # (B, L) bool
        "state": (torch.rand(batch, cfg.max_state_dim, generator=g) * 2 - 1).to(device),
        "noise": torch.randn(batch, cfg.chunk_size, cfg.max_action_dim, generator=g).to(device),
    }


def _state_arg(cfg: PiConfig, inputs: dict):
    return inputs["state"] if cfg.variant == "pi0" else None


# memory ------------------------------------------------------------------------------------------------------


def _status_kb(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_cpu_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc malloc_trim), so the RSS before a call excludes memory
    an earlier call freed; otherwise reused free pages hide a call's working set from the peak delta."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def memory_method(device: torch.device) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated"
    if _status_kb("VmHWM") is not None and _reset_cpu_peak():
        return "VmHWM (/proc/self/status) reset via /proc/self/clear_refs, after glibc malloc_trim"
    return "ru_maxrss (getrusage; process lifetime, not resettable)"


def measure_peak(fn: Callable[[], object], device: torch.device) -> dict[str, float]:
    """Peak memory of one call (MiB): whole-process peak and the increase over what was there before."""
    mib = 2**20
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_mb": peak / mib, "delta_mb": (peak - before) / mib}
    _release_free_heap()
    if _status_kb("VmHWM") is not None and _reset_cpu_peak():
        before = _status_kb("VmRSS") or 0
        fn()
        peak = _status_kb("VmHWM") or 0
        return {"peak_mb": peak / 1024, "delta_mb": max(peak - before, 0) / 1024}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"peak_mb": peak / 1024, "delta_mb": max(peak - before, 0) / 1024}


# timing ------------------------------------------------------------------------------------------------------


class _Clock:
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


def _summary(xs: list[float]) -> dict[str, float]:
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


def time_runners(runners: list[Runner], *, warmup: int, iters: int, device: torch.device) -> dict[str, dict]:
    """Interleaved timing: -> name -> {"total": [ms...], "vision": [...], ...}."""
    clock = _Clock(device)
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


# building ----------------------------------------------------------------------------------------------------


def _make_runner(name: str, mode: str, model: PiModel, s: BenchSettings, inputs: dict) -> Runner:
    cfg = model.config
    args = (
        inputs["images"],
        inputs["img_masks"],
        inputs["tokens"],
        inputs["token_masks"],
        _state_arg(cfg, inputs),
    )
    kw = {"noise": inputs["noise"], "num_steps": s.steps}
    if mode == "reference":
        return Runner(name, mode, cfg, model, lambda marks: model.sample_actions(*args, **kw))
    if mode == "reference_nocompact":
        return Runner(
            name,
            mode,
            cfg,
            model,
            lambda marks: model.sample_trace(*args, **kw, compact=False, keep_trace=False).actions,
        )
    engine = InferenceEngine(
        model,
        batch_size=s.batch,
        device=s.device,
        dtype=s.dtype,
        compile=mode.startswith("compiled"),
        cuda_graph=mode.endswith("cuda_graph"),
        compact=mode != "engine_nocompact",
    )
    return Runner(
        name, mode, cfg, model, lambda marks: engine.sample_actions(*args, **kw, marks=marks), engine
    )


def build_models(s: BenchSettings) -> list[tuple[str, PiModel]]:
    """-> [(label, model)], deepest first for presets."""
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
    for depth in sorted(set(s.depths or [base.depth]), reverse=True):
        torch.manual_seed(s.seed)
        cfg = preset(s.preset, depth=depth, **overrides)
        model = PiModel(cfg).to(device).eval()
        if s.dtype == "bfloat16":
            model.to_bfloat16()
        out.append((f"{s.preset}_d{depth}", model))
    return out


# the benchmark -----------------------------------------------------------------------------------------------


def run_bench(s: BenchSettings, log: Callable[[str], None] = print) -> dict:
    s.validate()
    if s.threads:
        torch.set_num_threads(s.threads)
    device = torch.device(s.device)
    models = build_models(s)
    cfg0 = models[0][1].config
    slots = len(cfg0.cameras)
    cameras = s.cameras if s.cameras is not None else (slots - 1 if slots > 1 else 1)
    lang = s.lang_tokens if s.lang_tokens is not None else min(20, cfg0.tokenizer_max_length)
    steps = s.steps or cfg0.num_inference_steps
    inputs = make_inputs(cfg0, batch=s.batch, cameras=cameras, lang_tokens=lang, device=device, seed=s.seed)
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

    runners = [_make_runner(f"{label}/{mode}", mode, m, s, inputs) for label, m in models for mode in s.modes]
    log(
        f"bench: {len(runners)} runner(s) on {device}, {s.dtype}, batch {s.batch}, {cameras}/{slots} cameras, "
        f"{lang} prompt tokens, {s.steps or 'each model its own'} steps; warm-up {s.warmup}, {s.iters} timed calls each"
    )

    runs, outputs = [], {}
    for r in runners:
        box: dict = {}
        # First call (cold: builds caches / compiles / captures), measured for peak memory.
        mem = measure_peak(lambda r=r, box=box: box.update(out=r.call(None)), device)
        outputs[r.name] = box["out"]
        first = next(x for x in runners if x.model is r.model)  # this model's first mode
        diff = None if first is r else float((box["out"].float() - outputs[first.name].float()).abs().max())
        compact = "nocompact" not in r.mode
        r_steps = s.steps or r.config.num_inference_steps  # each model samples with its own schedule
        flops = call_flops(
            r.config,
            batch=s.batch,
            cameras=cameras if compact else slots,
            lang_tokens=lang if compact else r.config.tokenizer_max_length,
            steps=r_steps,
            cached_conditioning=r.engine is not None,
        )
        counted = None
        if s.count_flops:
            if r.engine is not None:
                counted = count_engine_flops(r.engine, inputs, r_steps)
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
                "steps": r_steps,
                "time_grid": r.config.time_grid(s.steps),
                "params": params,
                "weights_mb": weights / 2**20,
                "flops": flops,
                "flops_counted": counted,
                "memory": mem,
                "max_abs_diff_vs_first_mode": diff,
            }
        )
        log(f"  prepared {r.name}: {flops['total'] / 1e9:.2f} GFLOP/call, peak +{mem['delta_mb']:.0f} MiB")

    samples = time_runners(runners, warmup=s.warmup, iters=s.iters, device=device)
    for run in runs:
        smp = samples[run["name"]]
        run["latency_ms"] = _summary(smp["total"])
        run["stages_ms"] = {k: _summary(smp[k]) for k in STAGES if k in smp} or None
        log(
            f"  {run['name']:<40} median {run['latency_ms']['median']:8.1f} ms  p90 {run['latency_ms']['p90']:8.1f} ms"
        )

    result = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment(device),
        "settings": {
            **dataclasses.asdict(s),
            "camera_slots": slots,
            "cameras_valid": cameras,
            "lang_tokens_valid": lang,
            "prompt_length": cfg0.tokenizer_max_length,
            "steps": steps,
            "chunk": cfg0.chunk_size,
        },
        "timing": "CUDA events" if device.type == "cuda" else "time.perf_counter wall clock",
        "memory_method": memory_method(device),
        "runs": runs,
        "ratios": ratios(runs),
    }
    return result


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


def environment(device: torch.device) -> dict:
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


# output ------------------------------------------------------------------------------------------------------


def write_json(result: dict, path: str | Path) -> Path:
    """Atomic write (temp file + rename): a crash never leaves half a JSON behind."""
    return write_json_atomic(path, result)


def plot_latency(result: dict, path: str | Path, log: Callable[[str], None] = print) -> Path | None:
    """Median latency (p90 as the error bar) against depth, one line per mode. Needs the `plot` extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("plot skipped: matplotlib is not installed (pip install 'shallowpi[plot]')")
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in dict.fromkeys(r["mode"] for r in result["runs"]):
        group = sorted((r for r in result["runs"] if r["mode"] == mode), key=lambda r: r["depth"])
        xs = [r["depth"] for r in group]
        med = [r["latency_ms"]["median"] for r in group]
        err = [r["latency_ms"]["p90"] - r["latency_ms"]["median"] for r in group]
        ax.errorbar(xs, med, yerr=[[0] * len(err), err], marker="o", capsize=3, label=mode)
    st = result["settings"]
    ax.set_xlabel("depth (layers per stack)")
    ax.set_ylabel("sample_actions latency, ms (median, bar to p90)")
    ax.set_title(f"{st['preset'] or 'policies'} on {st['device']} ({st['dtype']}, batch {st['batch']})")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure_atomic(fig, path)
