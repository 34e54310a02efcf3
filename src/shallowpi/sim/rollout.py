"""One Meta-World episode of a policy: observation -> action chunk -> env steps until success or max_steps.

The policy sees what the training data holds: the rendered cameras (rotated upright), the state and the task
instruction. Each call returns an action chunk; its first `actions_per_call` actions run open-loop (--n-action-steps, else
the policy's config.json `n_action_steps`, else the whole chunk).
With `inference_delay` d (control steps): the next chunk is requested from the observation d steps before
the current chunk's window ends; the robot keeps executing the old chunk for those d steps, then the new
chunk runs from its index d (`rtc`: sampled with real-time chunking toward the old chunk's unexecuted tail).
Flow-matching noise is seeded per (task, episode, call). Success = `info["success"]` at any step.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shallowpi.data.video_encoder import write_mp4
from shallowpi.infer.actions import UnsafeActionError, check_actions
from shallowpi.sim import metaworld_env as mw
from shallowpi.sim.eval_config import CONFIGS_PER_SEED, EvalConfig
from shallowpi.sim.policy import ChunkPolicy


@dataclass
class EpisodeResult:
    task: str
    episode: int
    mt1_seed: int  # configuration = MT1(task, mt1_seed).train_tasks[config_index]
    config_index: int
    success: bool
    steps: int  # env steps taken (success step + 1, or max_steps)
    sum_reward: float
    max_reward: float
    policy_calls: int
    policy_s: float  # time spent inside the policy
    video_path: str | None = None
    # Why the episode was stopped early, e.g. non-finite actions (never sent to the env); None: it ran.
    stopped: str | None = None
    image_size: int | None = None  # the render size used (resolved from the policy when the config has None)
    # max|a_first(k+1) - a_next(k)| at each chunk switch: the new chunk's first executed action against the
    # action the old chunk would have run next (clipped to the env's box; none when the old chunk had no more)
    chunk_jumps: list[float] = field(default_factory=list)


def _call_seed(seed: int, task: str, episode: int, call: int) -> int:
    """Noise seed per policy call, independent of which worker runs the episode."""
    task_id = mw.MT50.index(task) if task in mw.MT50 else sum(map(ord, task))
    return int(np.random.SeedSequence([seed, task_id, episode, call]).generate_state(1)[0])


def run_episode(
    env: mw.MetaWorldEnv, policy: ChunkPolicy, cfg: EvalConfig, episode: int, video_path: Path | None = None
) -> EpisodeResult:
    warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")
    obs = env.reset(episode)
    frames: list[np.ndarray] = []
    rewards: list[float] = []
    jumps: list[float] = []
    success, calls, policy_s, steps = False, 0, 0.0, 0
    stopped = None
    images = None
    d, n = cfg.inference_delay, cfg.actions_per_call
    chunk: np.ndarray | None = None  # the executing chunk
    pos = end = 0  # index of its next action; where its window of actions ends
    pending: np.ndarray | None = None  # the next chunk, requested d steps before `end`
    for step in range(cfg.max_steps):
        request = chunk is None or (pending is None and pos == end - d)
        if request or video_path is not None:
            images = env.render()  # camera -> uint8 [H, W, 3], upright
        if video_path is not None:
            frames.append(np.concatenate([images[c] for c in policy.cameras], axis=1))
        if request:
            seen = {c: np.zeros_like(v) for c, v in images.items()} if cfg.blank_images else images
            rtc = {} if not cfg.rtc or chunk is None else {"prev_chunk": chunk[pos:], "inference_delay": d}
            t0 = time.perf_counter()
            try:
                new = policy(
                    seen,
                    env.state(obs),
                    env.instruction,
                    _call_seed(cfg.seed, env.task, episode, calls),
                    **rtc,
                )
                check_actions(new)  # whatever the ChunkPolicy: a NaN never reaches the env
            except UnsafeActionError as e:
                stopped = f"unsafe actions at step {step} (policy call {calls + 1}): {e}"
                break
            finally:
                policy_s += time.perf_counter() - t0
                calls += 1
            if new.ndim != 2 or new.shape[1] != 4:
                raise ValueError(f"policy returned actions of shape {new.shape}, expected (chunk, 4)")
            if chunk is None:  # the first chunk: nothing ran before it, it starts at index 0
                chunk, pos, end = new, 0, n or len(new)
            else:
                pending = new
        if pending is not None and pos == end:  # it arrives: the old chunk ran d more actions meanwhile
            if pos < len(chunk):  # the boundary jump: the new chunk's first action vs the old one's next
                jumps.append(float(np.abs(_clip(pending[d]) - _clip(chunk[pos])).max()))
            chunk, pos, end, pending = pending, d, d + (n or len(pending)), None
        action = _clip(chunk[pos])  # the env's Box(-1, 1)
        pos += 1
        # The raw env step (MetaWorldEnv.step drops the reward, which eval_info.json reports like LeRobot).
        obs, reward, _, _, info = env.env.step(action)
        rewards.append(float(reward))
        steps = step + 1
        if info["success"]:
            success = True
            break
    written = None
    if video_path is not None and frames:
        written = str(write_mp4(frames, video_path, fps=mw.FPS))
    return EpisodeResult(
        task=env.task,
        episode=episode,
        mt1_seed=cfg.seed + episode // CONFIGS_PER_SEED,
        config_index=episode % CONFIGS_PER_SEED,
        success=success,
        steps=steps,
        sum_reward=float(np.sum(rewards)),
        max_reward=float(np.max(rewards)) if rewards else 0.0,
        policy_calls=calls,
        policy_s=policy_s,
        video_path=written,
        stopped=stopped,
        image_size=env.image_size,
        chunk_jumps=jumps,
    )


def _clip(action: np.ndarray) -> np.ndarray:
    return np.clip(action, -1.0, 1.0).astype(np.float32)
