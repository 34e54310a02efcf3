"""The action contract: what a policy hands to a robot is a finite float chunk of the promised shape.

Checked by `ActionPredictor.predict` (serving and evaluation) and again by the server before any reply, so
a NaN from a broken checkpoint, statistics or a numerical blow-up is an error, never an action.
"""

from __future__ import annotations

import numpy as np


class UnsafeActionError(RuntimeError):
    """The model produced NaN/inf actions or a chunk of another shape: never sent to a robot (the server
    answers an error instead)."""


def check_actions(actions: np.ndarray, shape: tuple[int, ...] | None = None) -> None:
    """Raise UnsafeActionError unless `actions` is a finite float array (of `shape`, if given)."""
    if not isinstance(actions, np.ndarray) or actions.dtype.kind != "f":
        raise UnsafeActionError(f"actions must be a float array, got {type(actions).__name__}")
    if shape is not None and actions.shape != shape:
        raise UnsafeActionError(f"actions have shape {actions.shape}, the policy promises {shape}")
    if not np.isfinite(actions).all():
        n = int((~np.isfinite(actions)).sum())
        raise UnsafeActionError(
            f"the policy produced {n} non-finite action value(s) (nan/inf) in a {actions.shape} chunk"
        )


__all__ = ["UnsafeActionError", "check_actions"]
