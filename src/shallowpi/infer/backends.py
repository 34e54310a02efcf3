"""Which runtime runs a policy: shallowpi's torch engine or onnxruntime over shallowpi's own ONNX export.

    backend = resolve_backend(None, "cpu")          # the default for the device; "torch" or "onnxruntime"

- "torch": `InferenceEngine` (folded weights, static buffers; CUDA graphs and torch.compile where asked).
- "onnxruntime": `OnnxRunner` on `shallowpi export --format onnx` of the same folder (its CPU provider;
  the export is made on the fly by the commands that take --backend).

Both run the same folded graph and give the same actions for the same noise (within 1e-5 in fp32). The
default is the faster one on the device. On CUDA: torch (CUDA graphs; shallowpi's export targets
onnxruntime's CPU provider and TensorRT). On CPU: torch as well: since the fold (issue 27) the engine's
eager path is at or below onnxruntime's latency on the bundled teacher, an L6 student and the mid config
(benchmarks/engine_vs_ort.py, benchmarks/results/engine_vs_ort.json), and it needs no export.
"""

from __future__ import annotations

import importlib.util

from shallowpi.errors import UserError

BACKENDS = ("torch", "onnxruntime")


def onnxruntime_available() -> bool:
    """onnxruntime to run and onnx to export (the `export` extra)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def default_backend(device: str) -> str:
    """The faster backend available for `device` (see the module docstring)."""
    return "torch"


def resolve_backend(backend: str | None, device: str) -> str:
    """`backend` checked against the device and what is installed, or the default when None."""
    backend = default_backend(device) if backend is None else backend
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "onnxruntime":
        if not device.startswith("cpu"):
            raise UserError(
                f"the onnxruntime backend runs on the CPU (its CPU provider); got --device {device}"
            )
        if not onnxruntime_available():
            raise UserError(
                "the onnxruntime backend needs onnx and onnxruntime: pip install 'shallowpi[export]'"
            )
    return backend
