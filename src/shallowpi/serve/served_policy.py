"""ServedPolicy: what every served policy shares; a backend adds only `predict(sample)` (and its metadata).

    obs (client keys) --prepare (decode threads, beside the event loop)--> PreparedObservation(sample)
        observation mapping (every key checked, named in errors), state shape, prompt length
    --infer (the one inference thread)--> predict(sample) --> (chunk, action_dim) float32
        the action contract (`infer.actions.check_actions`): a non-finite chunk, or one of another shape
        than the metadata promises, raises UnsafeActionError and is never a reply

Backends: `serve.policy.PiPolicy` (torch), `onnx_runtime.policy.OnnxPolicy` (onnxruntime, no torch) and
`testing.DummyPolicy` (model-free). The server (`serve.server.PolicyServer`) reads `metadata`,
`max_request_bytes` (its default frame cap), `prepare` and `infer`; whatever the backend, it gets the same
frame cap, the same checks off the inference thread and the same action contract.

Real-time chunking: a client may send the unexecuted tail of its last chunk and the delay
(`serve.rtc_keys`); `prepare` checks them, `infer` runs `predict_rtc`; a backend that does not override
`predict_rtc` refuses such a request with one error.

Contract of `infer`: returns {"actions": float32 (chunk, action_dim), "policy_timing": {"infer_ms": float}}.
Bad input raises `ObservationError` (a ValueError) naming the key: missing key, wrong dtype or shape,
non-finite values, a prompt that does not fit; a processor error raised inside `predict` (a ValueError) is
the client's too. Nothing here imports torch.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from shallowpi.errors import UserError
from shallowpi.infer.actions import check_actions
from shallowpi.serve.obs_mapping import (
    ObservationError,
    ObsMapping,
    PreparedObservation,
    get_mapping,
    max_request_bytes,
)
from shallowpi.serve.rtc_keys import DELAY_KEY, PREV_ACTIONS_KEY, RTCFields, extract_rtc


class ServedPolicy(ABC):
    backend: str = ""  # "torch", "onnxruntime", ...: sent in the metadata

    def __init__(
        self,
        *,
        cameras: Sequence[str | None],
        state_dim: int,
        action_dim: int,
        chunk_size: int,
        obs_mapping: ObsMapping | str = "libero",
        default_prompt: str | None = None,
        name: str = "shallowpi",
    ) -> None:
        """`cameras`: the processor's camera feeding each model slot, in slot order (None: no camera feeds
        it); the observation mapping must feed every one of them (checked here, at start-up)."""
        self.mapping = get_mapping(obs_mapping)
        self.cameras: tuple[str | None, ...] = tuple(cameras)
        self.state_dim, self.action_dim, self.chunk_size = state_dim, action_dim, chunk_size
        self.default_prompt, self.name = default_prompt, name
        fed = set(self.mapping.resolve(self.cameras))  # fails at start-up, not on the first request
        unfed = sorted({c for c in self.cameras if c is not None} - fed)
        if unfed:
            raise UserError(
                f"observation mapping {self.mapping.name!r} feeds no client key to camera(s) {unfed}"
            )

    # What a backend gives ---------------------------------------------------------------------------------
    @abstractmethod
    def predict(self, sample: dict) -> np.ndarray:
        """A checked processor sample {"images", "state", "task"} -> actions (chunk, action_dim) float32."""

    def predict_rtc(self, sample: dict, rtc: RTCFields) -> np.ndarray:
        """`predict` guided toward the client's previous chunk; a backend that runs real-time chunking
        overrides it (`prepare` refuses such requests for the others before they reach here)."""
        raise ObservationError(f"the {self.backend} backend does not run real-time chunking")

    @property
    def supports_rtc(self) -> bool:
        """Whether this backend runs real-time chunking requests (`serve.rtc_keys`): it overrides `predict_rtc`."""
        return type(self).predict_rtc is not ServedPolicy.predict_rtc

    @property
    @abstractmethod
    def max_task_chars(self) -> int:
        """The longest task text the policy can take (sizes the frame cap)."""

    def check_task(self, task: str) -> None:
        """Refuse a task that cannot fit, before any work on it (a ValueError; default: the length bound)."""
        if len(task) > self.max_task_chars:
            raise ObservationError(
                f"the prompt is {len(task)} characters, more than this policy reads ({self.max_task_chars})"
            )

    def describe(self) -> dict:
        """Backend fields of the metadata (msgpack-plain types only)."""
        return {}

    # Protocol ---------------------------------------------------------------------------------------------
    @property
    def metadata(self) -> dict:
        """Sent to every client on connect (msgpack-plain types only)."""
        return {
            "policy": self.name,
            "backend": self.backend,
            "action_chunk": self.chunk_size,
            "action_dim": self.action_dim,
            "state_dim": self.state_dim,
            "obs_mapping": self.mapping.describe(self.cameras),
            **self.describe(),
        }

    @property
    def action_shape(self) -> tuple[int, int]:
        return (self.chunk_size, self.action_dim)

    @property
    def max_request_bytes(self) -> int:
        """The largest valid request (the server's default frame cap): see obs_mapping.max_request_bytes."""
        fed = len(self.mapping.resolve(self.cameras))
        return max_request_bytes(fed, self.state_dim, self.max_task_chars)

    def prepare(self, obs: dict) -> PreparedObservation:
        """Every check that needs no model (keys, dtypes, shapes, finite state, prompt length), thread-safe:
        the server runs it beside the event loop, so the inference thread only ever sees usable requests."""
        sample = self.mapping.extract(obs, self.cameras, self.default_prompt)
        self._check_state(sample.get("state"))
        try:
            self.check_task(sample["task"])
        except ValueError as e:
            raise ObservationError(str(e)) from e
        rtc = extract_rtc(obs, self.chunk_size, self.action_dim)
        if rtc is not None and not self.supports_rtc:
            raise ObservationError(
                f"the {self.backend or self.name} backend does not run real-time chunking: send neither "
                f"{PREV_ACTIONS_KEY!r} nor {DELAY_KEY!r} (or serve with --backend torch)"
            )
        return PreparedObservation(sample, rtc)

    def infer(self, obs: dict | PreparedObservation) -> dict:
        start = time.monotonic()
        prepared = obs if isinstance(obs, PreparedObservation) else self.prepare(obs)
        sample = prepared.sample
        try:
            actions = self.predict(sample) if prepared.rtc is None else self.predict_rtc(sample, prepared.rtc)
        except ValueError as e:  # anything the processor still finds wrong came from the client
            raise ObservationError(str(e)) from e
        check_actions(actions, self.action_shape)  # nothing unsafe is ever a reply
        return {"actions": actions, "policy_timing": {"infer_ms": (time.monotonic() - start) * 1e3}}

    # Internals --------------------------------------------------------------------------------------------
    def _check_state(self, state: np.ndarray | None) -> None:
        if state is None:
            raise ObservationError(
                f"the model needs a state of dim {self.state_dim} but the mapping has no state key"
            )
        if state.shape != (self.state_dim,):
            key = " + ".join(repr(k) if isinstance(k, str) else repr("/".join(k)) for k in self.mapping.state)
            raise ObservationError(
                f"observation {key or 'state'} must have shape ({self.state_dim},), got {state.shape}"
            )
