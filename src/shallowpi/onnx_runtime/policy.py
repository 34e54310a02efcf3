"""OnnxPolicy: the server's policy interface (`metadata`, `infer`) over an exported folder, without torch.

Same contract and checks as `shallowpi.serve.policy.PiPolicy`: the observation mapping validates every
client key, the state must have the processor's dim, bad input raises `ObservationError` (the client gets
the reason and close code 1011), and non-finite actions raise `NonFiniteActions` (an internal error, never
a reply).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from shallowpi.errors import UserError
from shallowpi.onnx_runtime.processor import ProcessorError
from shallowpi.onnx_runtime.runner import OnnxRunner
from shallowpi.serve.obs_mapping import ObservationError, ObsMapping, get_mapping


class OnnxPolicy:
    def __init__(
        self,
        runner: OnnxRunner,
        *,
        obs_mapping: ObsMapping | str = "libero",
        default_prompt: str | None = None,
        seed: int | None = 0,
        name: str = "shallowpi-onnx",
    ) -> None:
        if runner.processor is None:
            raise UserError(f"{runner.manifest.root} was exported without a processor; it cannot be served")
        if runner.batch_size != 1:
            raise UserError(
                f"serving takes one observation per request; this export has batch_size={runner.batch_size}"
            )
        self.runner, self.proc = runner, runner.processor
        self.mapping = get_mapping(obs_mapping)
        self.default_prompt, self.seed, self.name = default_prompt, seed, name
        # The processor's camera feeding each model slot; None for slots no camera feeds or the export dropped.
        slots, exported = runner.manifest.cameras["slots"], set(runner.manifest.cameras["exported"])
        self.cameras: tuple[str | None, ...] = tuple(
            self.proc.slot_source.get(s) if s in exported else None for s in slots
        )
        fed = set(self.mapping.resolve(self.cameras))  # fails at start-up, not on the first request
        unfed = sorted({c for c in self.cameras if c is not None} - fed)
        if unfed:
            raise UserError(
                f"observation mapping {self.mapping.name!r} feeds no client key to camera(s) {unfed}"
            )
        self.state_dim, self.action_dim = self.proc.state_dim, self.proc.action_dim

    @classmethod
    def from_exported(
        cls, path: str | Path, *, threads: int | None = None, num_steps: int | None = None, **kwargs
    ) -> OnnxPolicy:
        return cls(OnnxRunner(path, threads=threads, num_steps=num_steps), name=Path(path).name, **kwargs)

    @property
    def metadata(self) -> dict:
        m = self.runner.manifest
        return {
            "policy": self.name,
            "backend": "onnxruntime",
            "variant": m.variant,
            "dtype": m.raw["dtype"],
            "depth": m.model["depth"],
            "layer_map": m.model["layer_map"],
            "action_chunk": m.model["chunk_size"],
            "action_dim": self.action_dim,
            "state_dim": self.state_dim,
            "cameras": dict(zip(m.cameras["slots"], self.cameras, strict=True)),
            "image_size": m.model["image_size"],
            "num_steps": len(self.runner.times),
            "obs_mapping": self.mapping.describe(self.cameras),
        }

    def infer(self, obs: dict) -> dict:
        start = time.monotonic()
        sample = self.mapping.extract(obs, self.cameras, self.default_prompt)
        state = sample.get("state")
        if state is None or state.shape != (self.state_dim,):
            got = "no state key" if state is None else f"shape {state.shape}"
            raise ObservationError(f"the model needs a state of shape ({self.state_dim},), got {got}")
        try:
            actions = self.runner.predict(sample, seed=self.seed)
        except ProcessorError as e:
            raise ObservationError(str(e)) from e
        return {
            "actions": np.asarray(actions, dtype=np.float32),
            "policy_timing": {"infer_ms": (time.monotonic() - start) * 1e3},
        }
