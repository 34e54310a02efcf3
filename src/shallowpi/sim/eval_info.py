"""eval_info.json in LeRobot's `lerobot-eval` layout ("per_task" with per-episode lists, "per_group" and
"overall" with pc_success, n_episodes, avg_sum_reward, avg_max_reward, video_paths; groups are task names)
plus what makes a run reproducible: per-episode MT1 seeds and configuration indices, and the settings."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from shallowpi.paths import portable_path
from shallowpi.sim import metaworld_env as mw
from shallowpi.sim.eval_config import EvalConfig
from shallowpi.sim.rollout import EpisodeResult


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def _aggregate(results: list[EpisodeResult]) -> dict:
    return {
        "avg_sum_reward": _mean([r.sum_reward for r in results]),
        "avg_max_reward": _mean([r.max_reward for r in results]),
        "pc_success": _mean([float(r.success) for r in results]) * 100 if results else float("nan"),
        "n_episodes": len(results),
        "n_stopped": sum(r.stopped is not None for r in results),  # episodes stopped for unsafe actions
        "video_paths": [portable_path(r.video_path) for r in results if r.video_path],
        **_jumps([j for r in results for j in r.chunk_jumps]),
    }


def _jumps(jumps: list[float]) -> dict:
    """Chunk-boundary jumps max|a_first(k+1) - a_next(k)| over every chunk switch."""
    return {
        "n_chunk_switches": len(jumps),
        "avg_chunk_jump": _mean(jumps),
        "max_chunk_jump": float(np.max(jumps)) if jumps else float("nan"),
    }


def eval_info(results: list[EpisodeResult], cfg: EvalConfig, eval_s: float) -> dict:
    """LeRobot's eval_info.json layout; groups are Meta-World task names."""
    per_task, per_group = [], {}
    for task_id, task in enumerate(cfg.tasks):
        rs = [r for r in results if r.task == task]
        per_task.append(
            {
                "task_group": task,
                "task_id": task_id,
                "instruction": mw.INSTRUCTIONS.get(task),
                "metrics": {
                    "sum_rewards": [r.sum_reward for r in rs],
                    "max_rewards": [r.max_reward for r in rs],
                    "successes": [r.success for r in rs],
                    "episode_lengths": [r.steps for r in rs],
                    "seeds": [r.mt1_seed for r in rs],
                    "config_indices": [r.config_index for r in rs],
                    "video_paths": [portable_path(r.video_path) for r in rs if r.video_path],
                    "stopped": [r.stopped for r in rs],  # None, or why the episode was stopped
                    "chunk_jumps": [r.chunk_jumps for r in rs],  # per episode, at each chunk switch
                },
            }
        )
        per_group[task] = {**_aggregate(rs), "seeds": sorted({r.mt1_seed for r in rs})}
    calls = sum(r.policy_calls for r in results)
    overall = {
        **_aggregate(results),
        "eval_s": eval_s,
        "eval_ep_s": eval_s / max(1, len(results)),
        "seeds": sorted({r.mt1_seed for r in results}),
        "policy_calls": calls,
        "policy_ms_per_call": 1e3 * sum(r.policy_s for r in results) / max(1, calls),
    }
    settings = asdict(cfg)
    settings["env"] = "metaworld"
    settings["backend"] = cfg.runtime
    settings["actions_per_call"] = (
        cfg.actions_per_call
    )  # what ran: the flag, else the policy's own (None: chunk)
    settings["policy"], settings["video_dir"] = portable_path(cfg.policy), portable_path(cfg.video_dir)
    settings["onnx_dir"] = portable_path(cfg.onnx_dir)
    sizes = {r.image_size for r in results if r.image_size is not None}
    if settings["image_size"] is None and len(sizes) == 1:  # record what was rendered, so reuse can match
        settings["image_size"] = sizes.pop()
    if (Path(cfg.policy) / "config.json").is_file():  # the time grid the policy was sampled with
        from shallowpi.model.checkpoint import read_config

        settings["time_grid"] = read_config(cfg.policy).time_grid(cfg.num_steps)
    return {"per_task": per_task, "per_group": per_group, "overall": overall, "settings": settings}
