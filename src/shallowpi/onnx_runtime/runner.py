"""Run an exported policy with onnxruntime: numpy, onnxruntime and sentencepiece only (no torch).

    runner = OnnxRunner("exported/")                      # checks manifest <-> graphs once
    actions = runner.predict({"images": {cam: uint8 HWC}, "state": (S,), "task": "..."}, seed=0)
    # -> (chunk, action_dim) float32, unnormalised; or model level:
    actions = runner.sample(images, image_masks, tokens, token_masks, state, noise=noise)

The prefix graph runs once per call, then the denoise graph once per Euler step of the manifest's time grid
(x += dt_k * v(x, t_k) from t = 1), exactly as `InferenceEngine` does.

Noise: `noise=` is used as given (to compare with shallowpi's engine); otherwise it is drawn from
`numpy.random.default_rng(seed)` (seed=None: fresh). numpy's generator is not torch's, so the same seed
gives other (equally distributed) noise than the torch backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from shallowpi.errors import UserError
from shallowpi.infer.actions import UnsafeActionError
from shallowpi.onnx_runtime.manifest import GRAPHS, Manifest, ManifestError, TensorSpec, read_manifest
from shallowpi.onnx_runtime.processor import NumpyProcessor, ProcessorError

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
    "tensor(int32)": "int32",
    "tensor(double)": "float64",
}


class NonFiniteActions(UnsafeActionError):
    """The policy produced nan/inf: never sent to a robot (the action contract's error, `infer.actions`)."""


def _graph_specs(session: ort.InferenceSession, kind: str) -> list[TensorSpec]:
    args = session.get_inputs() if kind == "inputs" else session.get_outputs()
    return [TensorSpec(a.name, tuple(a.shape), _ORT_TYPES.get(a.type, a.type)) for a in args]


def check_graph(manifest: Manifest, graph: str, session: ort.InferenceSession) -> None:
    """The manifest's names, shapes and dtypes must be the graph's own; one error lists every difference."""
    problems = []
    for kind in ("inputs", "outputs"):
        want = {s.name: s for s in manifest.specs(graph, kind)}
        have = {s.name: s for s in _graph_specs(session, kind)}
        for name in sorted(set(want) - set(have)):
            problems.append(f"{kind[:-1]} {name!r} is in the manifest but not in the graph")
        for name in sorted(set(have) - set(want)):
            problems.append(f"{kind[:-1]} {name!r} is in the graph but not in the manifest")
        for name in sorted(set(want) & set(have)):
            w, h = want[name], have[name]
            if (w.shape, w.dtype) != (h.shape, h.dtype):
                problems.append(
                    f"{kind[:-1]} {name!r}: manifest {list(w.shape)} {w.dtype}, graph {list(h.shape)} {h.dtype}"
                )
    if problems:
        raise ManifestError(
            f"{manifest.root}: manifest disagrees with {manifest.graph_file(graph).name}: "
            + "; ".join(problems)
        )


class OnnxRunner:
    def __init__(
        self,
        directory: str | Path,
        *,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        check_graphs: bool = True,
        num_steps: int | None = None,
        truncate_prompt: bool | None = None,
    ) -> None:
        """`num_steps` other than the manifest's replaces its time grid by N uniform Euler steps (t is a graph
        input, so any time grid runs). `truncate_prompt`: cut prompts that do not fit instead of refusing
        them (None: the exported processor's choice)."""
        self.manifest = read_manifest(directory)
        m = self.manifest
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: fp16 graphs make the CPU provider warn about casts
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        providers = list(providers or ["CPUExecutionProvider"])
        self.sessions: dict[str, ort.InferenceSession] = {}
        for graph in GRAPHS:
            path = m.graph_file(graph)
            try:
                self.sessions[graph] = ort.InferenceSession(str(path), opts, providers=providers)
            except Exception as e:  # onnxruntime raises its own exception types for bad/incomplete files
                raise ManifestError(f"{path}: onnxruntime cannot load this graph: {e}") from e
            if check_graphs:
                check_graph(m, graph, self.sessions[graph])
        self.times = [float(t) for t in m.time_grid["times"]]
        self.dts = [float(d) for d in m.time_grid["dts"]]
        if num_steps is not None and num_steps != len(self.times):
            if num_steps < 1:
                raise UserError(f"num_steps must be >= 1, got {num_steps}")
            dt = -1.0 / num_steps  # the same floats as the engine's time grid
            self.times, self.dts = [1.0 + k * dt for k in range(num_steps)], [dt] * num_steps
        self.batch_size = m.batch_size
        self.chunk_size = int(m.model["chunk_size"])
        self.max_action_dim = int(m.model["max_action_dim"])
        self.processor = (
            NumpyProcessor.from_manifest(m, truncate_prompt=truncate_prompt)
            if m.processor is not None
            else None
        )
        self._prefix_in = {s.name: s for s in m.specs("prefix", "inputs")}
        self._denoise_in = {s.name: s for s in m.specs("denoise", "inputs")}

    # model level -------------------------------------------------------------------------------------------
    def noise(self, seed: int | None = None) -> np.ndarray:
        shape = (self.batch_size, self.chunk_size, self.max_action_dim)
        return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)

    def sample(
        self,
        images: np.ndarray,
        image_masks: np.ndarray,
        tokens: np.ndarray,
        token_masks: np.ndarray,
        state: np.ndarray | None = None,
        *,
        noise: np.ndarray | None = None,
        seed: int | None = None,
    ) -> np.ndarray:
        """Exported-slot images [B, n_cam, 3, S, S] in [-1, 1] etc. -> normalised actions [B, chunk, A]."""
        feeds = {"images": images, "image_masks": image_masks, "tokens": tokens, "token_masks": token_masks}
        prefix_feeds = {
            name: self._checked(name, feeds.get(name), self._prefix_in[name]) for name in self._prefix_in
        }
        prefix = self.sessions["prefix"].run(None, prefix_feeds)
        cache = dict(zip((o.name for o in self.sessions["prefix"].get_outputs()), prefix, strict=True))
        x = self.noise(seed) if noise is None else noise
        x = self._checked("noise", x, self._denoise_in["x_t"])
        step_feeds = {k: v for k, v in cache.items() if k in self._denoise_in}
        if "state" in self._denoise_in:
            step_feeds["state"] = self._checked("state", state, self._denoise_in["state"])
        b = self.batch_size
        for t, dt in zip(self.times, self.dts, strict=True):
            step_feeds["x_t"] = x
            step_feeds["t"] = np.full((b,), t, dtype=np.float32)
            (v,) = self.sessions["denoise"].run(["velocity"], step_feeds)
            x = x + np.float32(dt) * v
        if not np.isfinite(x).all():
            raise NonFiniteActions("the exported policy produced non-finite actions (nan/inf)")
        return x

    @staticmethod
    def _checked(name: str, value, spec: TensorSpec) -> np.ndarray:
        if value is None:
            raise ProcessorError(
                f"{name}: required input (shape {list(spec.shape)}, {spec.dtype}) is missing"
            )
        arr = np.asarray(value)
        if arr.shape != spec.shape:
            raise ProcessorError(
                f"{name}: expected shape {list(spec.shape)} (fixed at export), got {list(arr.shape)}"
            )
        if spec.dtype == "bool":
            if arr.dtype != np.bool_:
                raise ProcessorError(f"{name}: expected a bool array, got {arr.dtype}")
        elif arr.dtype.kind != np.dtype(spec.dtype).kind:
            raise ProcessorError(f"{name}: expected {spec.dtype}, got {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=spec.dtype)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ProcessorError(f"{name}: contains non-finite values (nan/inf)")
        return arr

    # sample level ------------------------------------------------------------------------------------------
    def predict(
        self, sample: dict | Sequence[dict], *, seed: int | None = None, noise: np.ndarray | None = None
    ) -> np.ndarray:
        """One raw sample (batch 1) or a list of batch_size samples -> unnormalised (chunk, action_dim) float32
        (or (B, chunk, action_dim) for a list)."""
        if self.processor is None:
            raise ProcessorError(f"{self.manifest.root} has no processor (exported model only); use sample()")
        samples = [sample] if isinstance(sample, dict) else list(sample)
        if len(samples) != self.batch_size:
            raise ProcessorError(
                f"this export takes batch_size={self.batch_size} samples, got {len(samples)}"
            )
        ex = [self.processor(s) for s in samples]
        batch = {k: np.stack([e[k] for e in ex]) for k in ex[0]}
        actions = self.sample(**batch, noise=noise, seed=seed)
        out = self.processor.postprocess(actions).astype(np.float32)
        if not np.isfinite(out).all():
            raise NonFiniteActions("the exported policy produced non-finite actions (nan/inf)")
        return out[0] if isinstance(sample, dict) else out
