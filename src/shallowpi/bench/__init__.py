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

Files, one job each: settings (what to run), inputs, memory (peak probing), runners (building and interleaved
timing), suite (`run_bench`), results (summaries, ratios, JSON), plot. Timing and memory methods are
described in runners.py and memory.py.
"""

from __future__ import annotations

from shallowpi.bench.inputs import make_inputs
from shallowpi.bench.plot import plot_latency
from shallowpi.bench.results import write_json
from shallowpi.bench.settings import MODES, SCHEMA, BenchSettings
from shallowpi.bench.suite import run_bench

__all__ = ["MODES", "SCHEMA", "BenchSettings", "make_inputs", "plot_latency", "run_bench", "write_json"]
