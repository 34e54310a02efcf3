"""Simulation: the Meta-World env, scripted-expert demonstrations, evaluation."""

from __future__ import annotations

import os

# Processes for `collect` and `eval`: results do not depend on the number (seeded per episode), only the time.
DEFAULT_WORKERS = min(2, os.cpu_count() or 1)
