"""Meta-World success rates of a policy: `evaluate(cfg, out_dir)` runs every (task, episode) on held-out
configurations and writes a LeRobot-shaped eval_info.json.

The pieces: `eval_config` (what to run), `policy` (a pretrained folder as a chunk policy), `rollout` (one
episode), `pool` (worker processes), `eval_info` (the JSON); videos are encoded by `data.video_encoder`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shallowpi.atomic import write_json_atomic

# The pieces, importable from here as before: config, policy, one episode, the worker pool, eval_info.json.
from shallowpi.sim.eval_config import CONFIGS_PER_SEED, MAX_PATH_LENGTH, EvalConfig
from shallowpi.sim.eval_info import eval_info
from shallowpi.sim.policy import ChunkPolicy, OnnxPretrainedPolicy, PretrainedPolicy, default_policy_factory
from shallowpi.sim.pool import iter_results
from shallowpi.sim.rollout import EpisodeResult, run_episode

__all__ = [
    "CONFIGS_PER_SEED",
    "MAX_PATH_LENGTH",
    "ChunkPolicy",
    "EpisodeResult",
    "EvalConfig",
    "EvalRun",
    "OnnxPretrainedPolicy",
    "PretrainedPolicy",
    "default_policy_factory",
    "eval_info",
    "evaluate",
    "iter_results",
    "run_episode",
]


@dataclass
class EvalRun:
    info: dict
    path: Path
    results: list[EpisodeResult] = field(default_factory=list)


def evaluate(
    cfg: EvalConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    policy_factory: Callable[[EvalConfig], ChunkPolicy] = default_policy_factory,
) -> EvalRun:
    """Run every (task, episode) and write `out_dir/eval_info.json`."""
    from tqdm import tqdm

    cfg.validate()
    start = time.time()
    results: list[EpisodeResult] = []
    total = len(cfg.tasks) * cfg.episodes_per_task
    with tqdm(total=total, desc="eval", unit="ep", disable=not progress, dynamic_ncols=True) as bar:
        for r in iter_results(cfg, policy_factory):
            results.append(r)
            bar.update(1)
            bar.set_postfix(task=r.task.removesuffix("-v3"), success=f"{_pc(results):.0f}%")
    info = eval_info(results, cfg, time.time() - start)
    path = write_json_atomic(Path(out_dir) / "eval_info.json", info)
    return EvalRun(info, path, results)


def _pc(results: list[EpisodeResult]) -> float:
    return 100 * sum(r.success for r in results) / len(results) if results else math.nan
