"""PiPolicy: one client observation in, one unnormalised action chunk out (what the server calls).

    obs (client keys) --ObsMapping--> sample {"images", "state", "task"}
        --Preprocessor--> normalise state, resize-with-pad images, tokenise prompt --> model inputs (B = 1)
        --InferenceEngine.sample_actions--> normalised (1, chunk, max_action_dim)
        --Postprocessor--> unnormalised, cropped: (chunk, action_dim) float32

Contract of `infer`: returns {"actions": float32 (chunk, action_dim), "policy_timing": {"infer_ms": float}}.
Bad input raises `ObservationError` (a ValueError) naming the key: missing key, wrong dtype or shape,
non-finite values. The policy is not thread-safe; the server calls it from one thread.

Noise: with `seed` set (the default, 0), every request draws its flow-matching noise from a generator
seeded with `seed`, so the same observation always gives the same actions (reproducible episodes, and a
client can compare with a direct call). `seed=None` draws fresh noise every call, as openpi does.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from shallowpi.data.processor import Postprocessor, Preprocessor
from shallowpi.device import resolve_device
from shallowpi.errors import UserError
from shallowpi.infer.predictor import ActionPredictor
from shallowpi.model import PiModel, load_model
from shallowpi.pretrained import load_processor
from shallowpi.serve.obs_mapping import (
    ObservationError,
    ObsMapping,
    PreparedObservation,
    get_mapping,
    max_request_bytes,
)


class PiPolicy:
    def __init__(
        self,
        model: PiModel,  # in eval mode, on its device
        preprocessor: Preprocessor,
        postprocessor: Postprocessor,
        *,
        obs_mapping: ObsMapping | str = "libero",
        default_prompt: str | None = None,
        num_steps: int | None = None,
        seed: int | None = 0,
        name: str = "shallowpi",
        truncate_prompt: bool | None = None,  # None: the processor config's choice
    ) -> None:
        self.predictor = ActionPredictor(
            model, preprocessor, postprocessor, num_steps=num_steps, truncate_prompt=truncate_prompt
        )
        self.model, self.config = self.predictor.model, model.config
        self.pre, self.post = preprocessor, postprocessor
        self.mapping = get_mapping(obs_mapping)
        self.default_prompt = default_prompt
        self.num_steps = num_steps
        self.seed = seed
        self.name = name
        pc = preprocessor.config
        # The processor's camera key feeding each model slot (None: slot always masked).
        self.cameras: tuple[str | None, ...] = tuple(preprocessor.slot_source.get(s) for s in pc.cameras)
        fed = set(self.mapping.resolve(self.cameras))  # fails at start-up, not on the first request
        unfed = sorted(set(pc.camera_map) - fed)
        if unfed:
            raise UserError(
                f"observation mapping {self.mapping.name!r} feeds no client key to camera(s) {unfed}"
            )
        self.state_dim: int = preprocessor.state_dim
        self.action_dim: int = postprocessor.action_dim

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | None = None, **kwargs: Any) -> PiPolicy:
        """Model (`shallowpi.load_model`) and processors (`load_processor`) from one pretrained folder."""
        model = load_model(path, device=resolve_device(device))
        pre, post = load_processor(path)
        return cls(model, pre, post, name=Path(path).name, **kwargs)

    # Protocol ---------------------------------------------------------------------------------------------
    @property
    def metadata(self) -> dict:
        """Sent to every client on connect (msgpack-plain types only)."""
        c = self.config
        return {
            "policy": self.name,
            "variant": c.variant,
            "depth": c.depth,
            "layer_map": list(c.layer_map) if c.layer_map is not None else None,
            "action_chunk": c.chunk_size,
            "action_dim": self.action_dim,
            "state_dim": self.state_dim,
            "cameras": dict(zip(c.cameras, self.cameras, strict=True)),  # model slot -> processor camera
            "image_size": c.vision.image_size,
            "num_steps": c.num_inference_steps if self.num_steps is None else self.num_steps,
            "time_grid": c.time_grid(self.num_steps),  # the schedule every reply is sampled with
            "obs_mapping": self.mapping.describe(self.cameras),
        }

    @property
    def max_request_bytes(self) -> int:
        """The largest valid request (the server's default frame cap): see obs_mapping.max_request_bytes."""
        fed = sum(c is not None for c in self.cameras)
        return max_request_bytes(fed, self.state_dim, self.pre.max_task_chars)

    def prepare(self, obs: dict) -> PreparedObservation:
        """Every check that needs no model (keys, dtypes, shapes, finite state, prompt length), thread-safe:
        the server runs it beside the event loop, so the inference thread only ever sees usable requests."""
        sample = self.mapping.extract(obs, self.cameras, self.default_prompt)
        self._check_state(sample)
        try:
            self.pre.check_task(sample["task"])
        except ValueError as e:
            raise ObservationError(str(e)) from e
        return PreparedObservation(sample)

    def infer(self, obs: dict | PreparedObservation) -> dict:
        start = time.monotonic()
        sample = (obs if isinstance(obs, PreparedObservation) else self.prepare(obs)).sample
        try:
            actions = self.predictor.predict(sample, seed=self.seed)
        except ValueError as e:  # anything the processor still finds wrong came from the client
            raise ObservationError(str(e)) from e
        return {"actions": actions, "policy_timing": {"infer_ms": (time.monotonic() - start) * 1e3}}

    # Internals --------------------------------------------------------------------------------------------
    def _check_state(self, sample: dict) -> None:
        state = sample.get("state")
        key = (
            " + ".join(repr(k) if isinstance(k, str) else repr("/".join(k)) for k in self.mapping.state)
            or "state"
        )
        if state is None:
            raise ObservationError(
                f"the model needs a state of dim {self.state_dim} but the mapping has no state key"
            )
        if state.shape != (self.state_dim,):
            raise ObservationError(
                f"observation {key} must have shape ({self.state_dim},), got {state.shape}"
            )
