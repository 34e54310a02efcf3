"""Latency, FLOPs and memory of `sample_actions`: several depths / policies / modes, and either runtime.

Every runner gets the same inputs (same images, prompt and noise). The torch backend's timed calls are
interleaved (call i of every runner, then call i + 1, ...), so load from other processes hits every runner
alike and the ratios stay meaningful on a shared machine. The onnxruntime backend (`backends`) runs in a
child process of its own, after the torch runs (`shallowpi.onnx_runtime.timing`), on an export of each
model made here: the two runtimes never share a process (onnxruntime's spinning threads slow torch).
Every run records its backend and its warm-up (building the engine or the session, plus the first call:
folding, compiling, capturing).

Modes (torch backend):
  reference            PiModel.sample_actions (default path: masked camera slots and shared padding skipped)
  reference_nocompact  PiModel.sample_trace(compact=False): every camera slot and padding token computed
  engine               InferenceEngine, eager, folded weights
  engine_nocompact     InferenceEngine(compact=False)
  engine_unfolded      InferenceEngine(fold=False): the model's own modules (the engine before folding)
  compiled             InferenceEngine(compile=True)
  cuda_graph           InferenceEngine(cuda_graph=True)            (CUDA only)
  cuda_graph_unfolded  InferenceEngine(cuda_graph=True, fold=False)  (CUDA only)
  compiled_cuda_graph  InferenceEngine(compile=True, cuda_graph=True)  (CUDA only)
The onnxruntime backend's runs have mode "onnxruntime".

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
