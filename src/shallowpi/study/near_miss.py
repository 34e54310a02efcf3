"""How close failed reach episodes came: the closest hand-to-target distance, recovered from an evaluation's
per-episode maximum reward. Reach's reward is 10 × a long-tail tolerance of that distance (1 inside the
50-mm success radius, 0.1 at `margin` beyond it, margin = the hand's start-to-target distance), so the
maximum reward of an episode fixes its closest approach. Tells a near miss (stopped millimetres short) from
a wrong motion without re-running anything.

    python -m shallowpi.study.near_miss results/v3/evals/L6_task_kd_attn_seed1001.json
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from shallowpi.errors import UserError
from shallowpi.jsonfile import read_json

REACH = "reach-v3"
RADIUS_M = 0.05  # reach-v3's success radius and the tolerance's upper bound
_VALUE_AT_MARGIN = 0.1  # Meta-World's tolerance default
_SCALE = math.sqrt(1 / _VALUE_AT_MARGIN - 1)  # long-tail: value = 1 / ((scale * x)^2 + 1)


def closest_m(max_reward: float, margin_m: float) -> float:
    """Closest hand-to-target distance (m) of an episode whose best step earned `max_reward`."""
    value = min(max(max_reward / 10.0, 1e-12), 1.0)
    return RADIUS_M + math.sqrt(1 / value - 1) / _SCALE * margin_m


def reach_margins(seed: int, episodes: int) -> list[float]:
    """The tolerance margin of each held-out reach episode: the hand's start-to-target distance (m)."""
    from shallowpi.sim.metaworld_env import MetaWorldEnv

    env = MetaWorldEnv(REACH, seed=seed, cameras=[])
    try:
        margins = []
        for episode in range(episodes):
            env.reset(episode)
            margins.append(float(np.linalg.norm(env.env.hand_init_pos - env.env._target_pos)))
        return margins
    finally:
        env.close()


def reach_misses_mm(info: dict) -> list[float]:
    """Closest approach (mm) of each failed reach episode of an `eval_info.json`, in episode order."""
    try:
        metrics = next((t["metrics"] for t in info["per_task"] if t["task_group"] == REACH), None)
        seed = info["settings"]["seed"]
        if metrics is not None:
            successes, max_rewards = metrics["successes"], metrics["max_rewards"]
    except (KeyError, TypeError) as e:
        raise UserError(f"not an eval_info.json (no per-episode metrics): missing {e}") from None
    if metrics is None:
        return []
    if len(successes) != len(max_rewards):
        raise UserError(f"reach has {len(successes)} successes but {len(max_rewards)} max_rewards")
    margins = reach_margins(seed, len(successes))
    return [
        1000 * closest_m(r, m) for ok, r, m in zip(successes, max_rewards, margins, strict=True) if not ok
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m shallowpi.study.near_miss", description=__doc__.split("\n")[0]
    )
    p.add_argument("evals", nargs="+", type=Path, help="eval_info.json files (each policy's evaluation)")
    args = p.parse_args(argv)
    try:
        rows = [(path.stem, reach_misses_mm(read_json(path))) for path in args.evals]
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, misses in rows:
        if not misses:
            print(f"{name}: no failed reach episode")
            continue
        print(
            f"{name}: {len(misses)} failed reach episodes; closest approach median {np.median(misses):.0f} mm,"
            f" range {min(misses):.0f}–{max(misses):.0f} mm (success radius {RADIUS_M * 1000:.0f} mm)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
