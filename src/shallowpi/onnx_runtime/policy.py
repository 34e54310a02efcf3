"""OnnxPolicy: the onnxruntime backend of the served policy (`shallowpi.serve.served_policy.ServedPolicy`)
over an exported folder, without torch.

The base gives it what every served policy has: the observation mapping that checks every client key, the
state shape and prompt length checked beside the event loop (`prepare`), the frame cap
(`max_request_bytes`), and the action contract (non-finite actions raise `NonFiniteActions`, an
`UnsafeActionError`: an error, never a reply). Bad input raises `ObservationError` (the client gets the
reason and close code 1011).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shallowpi.errors import UserError
from shallowpi.onnx_runtime.runner import OnnxRunner
from shallowpi.serve.obs_mapping import ObsMapping
from shallowpi.serve.served_policy import ServedPolicy


class OnnxPolicy(ServedPolicy):
    backend = "onnxruntime"

    def __init__(
        self,
        runner: OnnxRunner,
        *,
        obs_mapping: ObsMapping | str = "libero",
        default_prompt: str | None = None,
        seed: int | None = 0,
        name: str = "shallowpi-onnx",
        truncate_prompt: bool | None = None,  # None: the exported processor's choice
    ) -> None:
        if runner.processor is None:
            raise UserError(f"{runner.manifest.root} was exported without a processor; it cannot be served")
        if runner.batch_size != 1:
            raise UserError(
                f"serving takes one observation per request; this export has batch_size={runner.batch_size}"
            )
        self.runner, self.proc, self.seed = runner, runner.processor, seed
        if truncate_prompt is not None:
            self.proc.config.truncate_prompt = truncate_prompt
        # The processor's camera feeding each model slot; None for slots no camera feeds or the export dropped.
        slots, exported = runner.manifest.cameras["slots"], set(runner.manifest.cameras["exported"])
        super().__init__(
            cameras=tuple(self.proc.slot_source.get(s) if s in exported else None for s in slots),
            state_dim=self.proc.state_dim,
            action_dim=self.proc.action_dim,
            chunk_size=runner.chunk_size,
            obs_mapping=obs_mapping,
            default_prompt=default_prompt,
            name=name,
        )

    @classmethod
    def from_exported(
        cls,
        path: str | Path,
        *,
        threads: int | None = None,
        num_steps: int | None = None,
        **kwargs: Any,
    ) -> OnnxPolicy:
        runner = OnnxRunner(path, threads=threads, num_steps=num_steps)
        return cls(runner, **{"name": Path(path).name, **kwargs})

    # Backend ----------------------------------------------------------------------------------------------
    def predict(self, sample: dict) -> np.ndarray:
        return np.asarray(self.runner.predict(sample, seed=self.seed), dtype=np.float32)

    @property
    def max_task_chars(self) -> int:
        return self.proc.max_task_chars

    def check_task(self, task: str) -> None:
        self.proc.check_task(task)

    def describe(self) -> dict:
        m = self.runner.manifest
        return {
            "variant": m.variant,
            "dtype": m.raw["dtype"],
            "depth": m.model["depth"],
            "layer_map": m.model["layer_map"],
            "cameras": dict(zip(m.cameras["slots"], self.cameras, strict=True)),
            "image_size": m.model["image_size"],
            # exports made before prefix compression lack these: every patch token, the whole tower
            "image_tokens": m.model.get("image_tokens", m.model.get("num_patches")),
            "vision_depth": m.model.get("vision_depth"),
            "num_steps": len(self.runner.times),
        }
