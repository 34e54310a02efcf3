"""Real-time chunking fields of a served observation: two optional keys beside the openpi observation keys.

    "rtc_prev_actions"      (n, action_dim) float: the unexecuted tail of the last chunk the client received,
                            at the time of this request (row 0 = the action it executes next), 1 <= n <= chunk
    "rtc_inference_delay"   int, 0 <= d <= n: control steps the robot keeps executing that tail while this
                            request is served; the reply's first d actions then reproduce them (the client
                            starts the new chunk at index d)

Both or neither: a client that sends neither (every openpi client) gets exactly today's reply. Checked beside
the event loop, like every other key; a bad value is one error reply naming the key. Nothing here imports torch.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from shallowpi.serve.obs_mapping import ObservationError

PREV_ACTIONS_KEY = "rtc_prev_actions"
DELAY_KEY = "rtc_inference_delay"


@dataclass(frozen=True)
class RTCFields:
    prev_actions: np.ndarray  # (n, action_dim) float32
    inference_delay: int


def extract_rtc(obs: Mapping, chunk_size: int, action_dim: int) -> RTCFields | None:
    """The request's RTC fields, checked; None when it sends neither key."""
    has_prev, has_delay = PREV_ACTIONS_KEY in obs, DELAY_KEY in obs
    if not has_prev and not has_delay:
        return None
    if has_prev != has_delay:
        missing = DELAY_KEY if has_prev else PREV_ACTIONS_KEY
        raise ObservationError(
            f"real-time chunking needs both {PREV_ACTIONS_KEY!r} and {DELAY_KEY!r}; {missing!r} is missing"
        )
    prev = obs[PREV_ACTIONS_KEY]
    if not isinstance(prev, np.ndarray) or prev.dtype.kind not in "fiu":
        raise ObservationError(
            f"observation {PREV_ACTIONS_KEY!r} must be a numeric array, got {type(prev).__name__}"
        )
    if prev.ndim != 2 or prev.shape[1] != action_dim or not 1 <= prev.shape[0] <= chunk_size:
        raise ObservationError(
            f"observation {PREV_ACTIONS_KEY!r} must have shape (n, {action_dim}) with 1 <= n <= {chunk_size}, "
            f"got {prev.shape}"
        )
    prev = prev.astype(np.float32)
    if not np.isfinite(prev).all():
        raise ObservationError(f"observation {PREV_ACTIONS_KEY!r} has non-finite values (nan/inf)")
    delay = obs[DELAY_KEY]
    if isinstance(delay, np.ndarray) and delay.ndim == 0:
        delay = delay.item()
    if isinstance(delay, bool) or not isinstance(delay, numbers.Integral):
        raise ObservationError(f"observation {DELAY_KEY!r} must be an integer, got {delay!r}")
    n = prev.shape[0]
    if not 0 <= delay <= n:
        raise ObservationError(
            f"observation {DELAY_KEY!r} must be in [0, {n}] (the {n} actions of {PREV_ACTIONS_KEY!r}), got {delay}"
        )
    return RTCFields(prev, int(delay))
