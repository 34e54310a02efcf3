"""Run an exported policy (`shallowpi export --format onnx`) with numpy + onnxruntime + sentencepiece only.

Nothing on this package's import path imports torch (a test imports and runs it in a torch-free venv).
"""

from shallowpi.onnx_runtime.manifest import Manifest, ManifestError, read_manifest
from shallowpi.onnx_runtime.processor import NumpyProcessor, ProcessorError
from shallowpi.onnx_runtime.runner import NonFiniteActions, OnnxRunner

__all__ = [
    "Manifest",
    "ManifestError",
    "NonFiniteActions",
    "NumpyProcessor",
    "OnnxRunner",
    "ProcessorError",
    "read_manifest",
]
