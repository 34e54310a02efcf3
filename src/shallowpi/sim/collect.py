"""Collect Meta-World scripted demonstrations into a LeRobotDataset v3.0, with several worker processes.

Episode e of task T always starts from configuration `MT1(T, seed + e // 50).train_tasks[e % 50]` and the
expert is deterministic, so the same arguments give the same dataset whatever the number of workers: jobs
(task, episode) are handed out in order and results are written in that order. Failed episodes (no success
within `max_steps`) are dropped and counted.
"""

from __future__ import annotations

import multiprocessing as mp
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shallowpi.errors import UserError
from shallowpi.sim import DEFAULT_WORKERS
from shallowpi.sim import metaworld_env as mw

CAMERAS = ("corner4", "gripperPOV")  # rendered unless told otherwise: a scene view and the wrist view


@dataclass
class CollectConfig:
    tasks: list[str]
    demos_per_task: int = 50
    task_demos: dict[str, int] = field(default_factory=dict)  # per-task counts that replace demos_per_task
    seed: int = 0
    image_size: int = 128
    cameras: list[str] = field(default_factory=lambda: list(CAMERAS))
    state: str = "hand"  # a key of metaworld_env.STATE_LAYOUTS
    max_steps: int = 200  # the expert needs at most ~180 steps on every MT10 task
    extra_steps: int = 5  # frames kept after the first success: the policy also sees "done, hold still"
    workers: int = DEFAULT_WORKERS
    codec: str = "h264"

    def validate(self) -> None:
        """The numbers, before any worker starts (names as the flags of `shallowpi collect`)."""
        if self.demos_per_task < 1:
            raise UserError(f"demos-per-task must be >= 1, got {self.demos_per_task}")
        if self.seed < 0:
            raise UserError(f"seed must be >= 0 (Meta-World's MT1 seed), got {self.seed}")
        if self.image_size < 1:
            raise UserError(f"image-size must be >= 1, got {self.image_size}")
        if not 1 <= self.max_steps <= mw.MAX_PATH_LENGTH:
            raise UserError(
                f"max-steps must be in [1, {mw.MAX_PATH_LENGTH}] (Meta-World's limit), got {self.max_steps}"
            )
        if self.extra_steps < 0:
            raise UserError(f"extra-steps must be >= 0, got {self.extra_steps}")
        if self.workers < 1:
            raise UserError(f"workers must be >= 1, got {self.workers}")
        if not self.tasks:
            raise UserError("no tasks to collect")
        for task, n in self.task_demos.items():
            if task not in self.tasks:
                raise UserError(f"task-demos names {task!r}, which is not among --tasks")
            if n < 1:
                raise UserError(f"task-demos for {task} must be >= 1, got {n}")
        if not self.cameras:
            raise UserError("no cameras to render")
        mw.check_cameras(self.cameras)
        mw.check_state_layout(self.state)

    def demos(self, task: str) -> int:
        return self.task_demos.get(task, self.demos_per_task)


@dataclass
class Episode:
    task: str
    episode: int
    success: bool
    steps: int
    state: np.ndarray | None = None  # [T, state dim]
    actions: np.ndarray | None = None  # [T, 4]
    images: dict[str, np.ndarray] | None = None  # camera -> uint8 [T, H, W, 3]


_worker_env: mw.MetaWorldEnv | None = None  # one env (and one renderer) per worker process


def _get_env(cfg: CollectConfig, task: str) -> mw.MetaWorldEnv:
    global _worker_env
    want = (task, cfg.seed, cfg.image_size, list(cfg.cameras), cfg.state)
    have = None
    if _worker_env is not None:
        e = _worker_env
        have = (e.task, e.seed, e.image_size, e.cameras, e.state_layout)
    if have != want:  # an env made for other settings (an earlier inline run) must not be reused
        if _worker_env is not None:
            _worker_env.close()  # release the old renderer before making a new one
        _worker_env = mw.MetaWorldEnv(
            task, seed=cfg.seed, image_size=cfg.image_size, cameras=cfg.cameras, state_layout=cfg.state
        )
    return _worker_env


def run_episode(cfg: CollectConfig, task: str, episode: int) -> Episode:
    """Roll out the expert once; images/state/actions are returned only for successful episodes."""
    warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")
    env = _get_env(cfg, task)
    policy = env.expert()
    obs = env.reset(episode)
    states, actions, frames = [], [], {c: [] for c in cfg.cameras}
    success_at = None
    for t in range(cfg.max_steps):
        # Observation t and the action taken from it form frame t.
        for cam, img in env.render().items():
            frames[cam].append(img)
        states.append(env.state(obs))
        action = np.clip(policy.get_action(obs), -1.0, 1.0).astype(np.float32)  # the env's Box(-1, 1)
        actions.append(action)
        obs, success = env.step(action)
        if success and success_at is None:
            success_at = t
        if success_at is not None and t >= success_at + cfg.extra_steps:
            break
    if success_at is None:
        return Episode(task, episode, False, cfg.max_steps)
    return Episode(
        task,
        episode,
        True,
        len(states),
        state=np.stack(states),
        actions=np.stack(actions),
        images={c: np.stack(v) for c, v in frames.items()},
    )


def _job(args: tuple[CollectConfig, str, int]) -> Episode:
    return run_episode(*args)


def _init_worker() -> None:
    mw.setup_rendering()


def iter_episodes(cfg: CollectConfig) -> Iterator[Episode]:
    """Episodes in (task, episode) order, computed by `cfg.workers` processes (or inline with 1 worker)."""
    # Episode e is MT1(task, seed)'s setup e, so a larger count keeps the smaller collection as its prefix.
    jobs = [(cfg, task, e) for task in cfg.tasks for e in range(cfg.demos(task))]
    if cfg.workers <= 1:
        mw.setup_rendering()
        yield from map(_job, jobs)
        return
    # spawn: a fresh interpreter per worker, so GL contexts and torch threads are never inherited by fork.
    mw.setup_rendering()  # env vars set here are inherited by the spawned workers
    with mp.get_context("spawn").Pool(cfg.workers, initializer=_init_worker) as pool:
        yield from pool.imap(_job, jobs, chunksize=1)


def collect(cfg: CollectConfig, out: str | Path, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Run the collection and write the dataset to `out`. Returns a summary (kept / attempted per task)."""
    from tqdm import tqdm

    from shallowpi.data.video_encoder import VideoSpec
    from shallowpi.data.writer import LeRobotDatasetWriter

    cfg.validate()
    summary = {t: {"attempted": 0, "kept": 0} for t in cfg.tasks}
    writer = LeRobotDatasetWriter(
        out,
        fps=mw.FPS,
        robot_type="sawyer",
        cameras={mw.camera_key(c): (cfg.image_size, cfg.image_size) for c in cfg.cameras},
        state_names=mw.STATE_LAYOUTS[cfg.state][0],
        action_names=mw.ACTION_NAMES,
        video=VideoSpec(codec=cfg.codec),
        overwrite=overwrite,
    )
    with writer:
        bar = tqdm(
            total=sum(cfg.demos(t) for t in cfg.tasks), desc="collect", unit="ep", disable=not progress
        )
        for ep in iter_episodes(cfg):
            summary[ep.task]["attempted"] += 1
            if ep.success:
                summary[ep.task]["kept"] += 1
                images = {mw.camera_key(c): v for c, v in ep.images.items()}
                writer.add_episode(images, ep.state, ep.actions, task=mw.INSTRUCTIONS[ep.task])
            kept = sum(s["kept"] for s in summary.values())
            bar.set_postfix(kept=kept, task=ep.task)
            bar.update(1)
        bar.close()
        if not writer.episodes:
            raise UserError(
                f"the expert succeeded in no episode within --max-steps {cfg.max_steps}; nothing to write"
            )
    return {
        "out": str(out),
        "episodes_kept": sum(s["kept"] for s in summary.values()),
        "episodes_attempted": sum(s["attempted"] for s in summary.values()),
        "frames": writer.total_frames,
        "per_task": summary,
    }
