"""The exported folder's manifest: what the graphs take and give, and how to run them. numpy/json only.

    DIR/manifest.json           this file's schema (FORMAT, VERSION)
    DIR/prefix.onnx (+ .data)   vision + language -> per-layer KV cache (weights as external data)
    DIR/denoise.onnx (+ .data)  one Euler step: x_t, t, KV cache -> velocity
    DIR/tokenizer.model         the policy's SentencePiece model (when it has a processor)

manifest.json:
    {"format": "shallowpi-onnx", "version": 1, "variant": "pi05", "dtype": "float32", "batch_size": 1,
     "graphs": {"prefix": {"file", "data", "inputs": [{"name", "shape", "dtype"}], "outputs": [...]},
                "denoise": {...}},
     "schedule": {"num_steps": 10, "times": [1.0, 0.9, ...], "dts": [-0.1, ...]},   x += dt_k * v(x, t_k)
     "model": {"chunk_size", "max_action_dim", "max_state_dim", "depth", "layer_map", "image_size",
               "prompt_length", "num_patches" (SigLIP's tokens per camera), "image_tokens" (per camera in the
               prefix: num_patches / image_merge²), "image_merge", "vision_depth", "vision_layer_map",
               "prefix_length"},
     "cameras": {"slots": [every model slot], "exported": [slots the prefix graph takes, in order],
                 "masked": [slots dropped at export: no camera feeds them]},
     "processor": null | {ProcessorConfig fields (camera_map, norms, dims, ...), "tokenizer_file"},
     "normalization": null | {"state": {"mode", stats...}, "action": {"mode", stats...}},
     "exporter": {...}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shallowpi.errors import MissingFileError, UserError

MANIFEST = "manifest.json"
FORMAT = "shallowpi-onnx"
VERSION = 1
GRAPHS = ("prefix", "denoise")
DTYPES = ("float32", "float16")  # export dtypes (weights + compute); inputs/outputs named in the manifest


class ManifestError(UserError):
    """An exported folder that cannot be run: missing files, or a manifest that does not fit the graphs."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy name: float32, float16, int64, bool

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict) -> TensorSpec:
        return cls(str(d["name"]), tuple(int(x) for x in d["shape"]), str(d["dtype"]))


@dataclass(frozen=True)
class Manifest:
    raw: dict
    root: Path

    @property
    def variant(self) -> str:
        return self.raw["variant"]

    @property
    def batch_size(self) -> int:
        return int(self.raw["batch_size"])

    @property
    def model(self) -> dict:
        return self.raw["model"]

    @property
    def time_grid(self) -> dict:
        """The Euler steps, {"num_steps", "times", "dts"} (the manifest's "schedule" key)."""
        return self.raw["schedule"]

    @property
    def processor(self) -> dict | None:
        return self.raw.get("processor")

    @property
    def normalization(self) -> dict | None:
        return self.raw.get("normalization")

    @property
    def cameras(self) -> dict:
        return self.raw["cameras"]

    def graph_file(self, graph: str) -> Path:
        return self.root / self.raw["graphs"][graph]["file"]

    def specs(self, graph: str, kind: str) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.raw["graphs"][graph][kind]]

    def spec(self, graph: str, kind: str, name: str) -> TensorSpec:
        for s in self.specs(graph, kind):
            if s.name == name:
                return s
        raise ManifestError(f"manifest: graph {graph!r} has no {kind[:-1]} {name!r}")


def write_manifest(path: Path, raw: dict) -> None:
    path.write_text(json.dumps(raw, indent=2) + "\n")


def read_manifest(directory: str | Path) -> Manifest:
    """Read and check DIR/manifest.json and that every file it names exists (one clear error otherwise)."""
    root = Path(directory)
    path = root / MANIFEST
    if not root.is_dir():
        raise MissingFileError(f"exported policy folder not found: {root}")
    if not path.is_file():
        raise MissingFileError(f"no {MANIFEST} in {root}: not a folder written by `shallowpi export`")
    try:
        raw: Any = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ManifestError(f"{path}: not a {FORMAT} manifest (format={raw.get('format')!r})")
    if raw.get("version") != VERSION:
        raise ManifestError(f"{path}: manifest version {raw.get('version')!r}, this runner reads {VERSION}")
    for key in ("variant", "batch_size", "graphs", "schedule", "model", "cameras"):
        if key not in raw:
            raise ManifestError(f"{path}: manifest lacks {key!r}")
    for graph in GRAPHS:
        g = raw["graphs"].get(graph)
        if not isinstance(g, dict) or not {"file", "inputs", "outputs"} <= set(g):
            raise ManifestError(f"{path}: manifest lacks graph {graph!r} (file, inputs, outputs)")
        for name in (g["file"], g.get("data")):
            if name is not None and not (root / name).is_file():
                raise ManifestError(f"{root}: graph {graph!r} file {name!r} is missing (incomplete export?)")
    sched = raw["schedule"]
    if len(sched.get("times", [])) != len(sched.get("dts", [])) or not sched.get("times"):
        raise ManifestError(f"{path}: schedule needs equally long, non-empty 'times' and 'dts'")
    proc = raw.get("processor")
    if proc is not None and not (root / proc["tokenizer_file"]).is_file():
        raise ManifestError(f"{root}: tokenizer file {proc['tokenizer_file']!r} is missing")
    return Manifest(raw, root)
