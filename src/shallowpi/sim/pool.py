"""Episodes of an evaluation run by spawned worker processes (or inline with one worker), one policy and one
env (one renderer) per process."""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from shallowpi.sim import metaworld_env as mw
from shallowpi.sim.eval_config import EvalConfig
from shallowpi.sim.policy import ChunkPolicy, default_policy_factory
from shallowpi.sim.rollout import EpisodeResult, run_episode

_policy: ChunkPolicy | None = None  # one policy and one env (one renderer) per process
_env: mw.MetaWorldEnv | None = None


def _init_worker(cfg: EvalConfig, policy_factory: Callable[[EvalConfig], ChunkPolicy]) -> None:
    global _policy
    mw.setup_rendering()
    import torch

    threads = cfg.threads_per_worker or max(1, (os.cpu_count() or 1) // cfg.workers)
    torch.set_num_threads(threads)
    _policy = policy_factory(cfg)


def _get_env(cfg: EvalConfig, task: str, cameras: list[str]) -> mw.MetaWorldEnv:
    global _env
    if _env is None or _env.task != task:
        if _env is not None:
            _env.close()  # release the old renderer before making a new one
        size = cfg.image_size or getattr(_policy, "image_size", None) or 128
        layout = getattr(_policy, "state_layout", "hand")
        _env = mw.MetaWorldEnv(task, seed=cfg.seed, image_size=size, cameras=cameras, state_layout=layout)
    return _env


def _job(args: tuple[EvalConfig, str, int]) -> EpisodeResult:
    cfg, task, episode = args
    assert _policy is not None, "worker not initialised"
    env = _get_env(cfg, task, _policy.cameras)
    video = None
    if cfg.video_dir and episode < cfg.videos_per_task:
        video = Path(cfg.video_dir) / task / f"eval_episode_{episode}.mp4"
    return run_episode(env, _policy, cfg, episode, video)


def _close_worker_env() -> None:
    global _env, _policy
    if _env is not None:
        _env.close()
    _env = _policy = None


def iter_results(
    cfg: EvalConfig, policy_factory: Callable[[EvalConfig], ChunkPolicy] = default_policy_factory
) -> Iterator[EpisodeResult]:
    """Episode results in (task, episode) order; `cfg.workers` spawned processes, or inline with 1.
    The onnxruntime backend without `cfg.onnx_dir` exports the policy once, here, for every worker."""
    if cfg.runtime == "onnxruntime" and cfg.onnx_dir is None:
        from shallowpi.export.onnx_export import export_policy

        with tempfile.TemporaryDirectory(prefix="shallowpi-eval-onnx-") as tmp:
            exported = replace(cfg, onnx_dir=str(export_policy(cfg.policy, Path(tmp) / "onnx")))
            yield from iter_results(exported, policy_factory)
        return
    jobs = [(cfg, task, e) for task in cfg.tasks for e in range(cfg.episodes_per_task)]
    mw.setup_rendering()  # env vars set here are inherited by spawned workers
    if cfg.workers <= 1:
        import torch

        threads = torch.get_num_threads()
        _init_worker(cfg, policy_factory)
        try:
            yield from map(_job, jobs)
        finally:
            _close_worker_env()
            torch.set_num_threads(threads)  # inline run: leave the caller's thread count as it was
        return
    # spawn: fresh interpreters, so GL contexts and torch/OpenMP thread pools are never inherited by fork.
    ctx = mp.get_context("spawn")
    with ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(cfg, policy_factory)) as pool:
        yield from pool.imap(_job, jobs, chunksize=1)
