"""Meta-World success rates of a policy: rollouts on held-out configurations, LeRobot-shaped eval_info.json.

Episode e of task T starts from `MT1(T, seed + e // 50).train_tasks[e % 50]` (seed 1000 by default: the
demos use 0), so results do not depend on the number of workers. Success = `info["success"]` at any step;
the episode stops there or after `max_steps`. The policy sees what the training data holds: the rendered
cameras (rotated upright), the state (hand xyz + gripper, and the goal position for a 7-dim
state) and the task instruction, turned into model
inputs by the same `Preprocessor` training uses. Each call returns an action chunk; the first
`n_action_steps` actions run open-loop. Flow-matching noise is seeded per (task, episode, call).

eval_info.json follows LeRobot's `lerobot-eval` layout ("per_task" with per-episode lists, "per_group" and
"overall" with pc_success, n_episodes, avg_sum_reward, avg_max_reward, video_paths; groups are task names)
plus what makes a run reproducible: per-episode MT1 seeds and configuration indices, and the settings.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np

from shallowpi.atomic import write_json_atomic
from shallowpi.device import resolve_device
from shallowpi.errors import MissingFileError, UserError
from shallowpi.infer.actions import UnsafeActionError, check_actions
from shallowpi.sim import DEFAULT_WORKERS
from shallowpi.sim import metaworld_env as mw

CONFIGS_PER_SEED = 50  # MT1(task, seed).train_tasks has 50 configurations
MAX_PATH_LENGTH = 500  # Meta-World raises past this many steps


class ChunkPolicy(Protocol):
    """What a rollout needs: Meta-World cameras to render and a map from observation to action chunk."""

    cameras: list[str]  # Meta-World camera names, e.g. ["corner4", "gripperPOV"]

    def __call__(self, images: dict[str, np.ndarray], state: np.ndarray, task: str, seed: int) -> np.ndarray:
        """images: camera -> uint8 [H, W, 3]; state [state dim] -> actions (chunk, 4) in the env's units.
        A policy may set `state_layout` (a key of metaworld_env.STATE_LAYOUTS; default "hand")."""
        ...


@dataclass
class EvalConfig:
    policy: str  # pretrained folder (model + processor)
    tasks: list[str]
    episodes_per_task: int = 50
    seed: int = 1000
    max_steps: int = 200
    n_action_steps: int | None = None  # None: the whole chunk
    workers: int = DEFAULT_WORKERS  # spawned processes; 1: inline (for policy factories that cannot pickle)
    # Render size; None: the policy's input size (what `shallowpi collect` demos for it are rendered at).
    # The processor resizes whatever is rendered to the model's input size.
    image_size: int | None = None
    device: str | None = None  # None: cuda if available, else cpu (`shallowpi.device`)
    num_steps: int | None = None  # Euler steps; None: the model config's
    blank_images: bool = False  # all-black camera images (masks stay on): does the policy need vision?
    video_dir: str | None = None
    videos_per_task: int = 2  # first N episodes of each task are recorded when video_dir is set
    threads_per_worker: int | None = None  # torch threads; None: cores / workers
    truncate_prompt: bool | None = None  # None: the policy's processor config decides (default: refuse)
    backend: str | None = None  # "torch" | "onnxruntime"; None: the faster one for the device
    onnx_dir: str | None = None  # onnxruntime: an export of `policy` (None: exported for this evaluation)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)  # recorded resolved in eval_info.json

    @property
    def runtime(self) -> str:
        """The backend that runs: `backend`, or the device's default (recorded so in eval_info.json)."""
        from shallowpi.infer.backends import resolve_backend

        return resolve_backend(self.backend, self.device)

    def validate(self) -> None:
        if self.episodes_per_task < 1:
            raise UserError(f"episodes-per-task must be >= 1, got {self.episodes_per_task}")
        if not 1 <= self.max_steps <= MAX_PATH_LENGTH:
            raise UserError(
                f"max-steps must be in [1, {MAX_PATH_LENGTH}] (Meta-World's limit), got {self.max_steps}"
            )
        if self.n_action_steps is not None and self.n_action_steps < 1:
            raise UserError(f"n-action-steps must be >= 1, got {self.n_action_steps}")
        if self.num_steps is not None and self.num_steps < 1:
            raise UserError(f"num-steps must be >= 1, got {self.num_steps}")
        if self.workers < 1:
            raise UserError(f"workers must be >= 1, got {self.workers}")
        if not self.tasks:
            raise UserError("no tasks to evaluate")
        if not Path(self.policy).is_dir():
            raise MissingFileError(f"policy folder not found: {self.policy}")
        from shallowpi.infer.backends import resolve_backend

        if resolve_backend(self.backend, self.device) == "onnxruntime" and self.truncate_prompt:
            raise UserError("--truncate-prompt is not available with the onnxruntime backend")


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


# the policy -------------------------------------------------------------------------------------------------


class PretrainedPolicy:
    """A pretrained folder as a Meta-World policy: env cameras -> the shared ActionPredictor (training
    Preprocessor, InferenceEngine, Postprocessor) -> (chunk, 4) unnormalised actions."""

    def __init__(
        self,
        path: str | Path,
        *,
        device: str | None = None,
        num_steps: int | None = None,
        truncate_prompt: bool | None = None,
    ) -> None:
        from shallowpi.infer.predictor import ActionPredictor

        self.predictor = ActionPredictor.from_pretrained(
            path, device=device, num_steps=num_steps, truncate_prompt=truncate_prompt
        )
        self.model, pre, post = self.predictor.model, self.predictor.pre, self.predictor.post
        prefix = mw.camera_key("")
        self.cameras = []
        for key in pre.config.camera_map:
            cam = key.removeprefix(prefix)
            if not key.startswith(prefix) or cam not in mw.CAMERAS:
                raise UserError(
                    f"policy camera {key!r} is not a Meta-World camera; expected {prefix}<one of {', '.join(mw.CAMERAS)}>"
                )
            self.cameras.append(cam)
        if not self.cameras:
            raise UserError(f"the policy in {path} maps no camera (processor camera_map is empty)")
        if post.action_dim != 4:
            raise UserError(f"Meta-World has action dim 4; the policy has {post.action_dim}")
        self.state_layout = mw.state_layout_for_dim(pre.state_dim)  # 4: hand, 7: hand + goal
        self.num_steps = num_steps
        self.chunk = self.model.config.chunk_size
        self.image_size = pre.config.image_size

    def __call__(self, images: dict[str, np.ndarray], state: np.ndarray, task: str, seed: int) -> np.ndarray:
        sample = {
            "images": {mw.camera_key(cam): images[cam] for cam in self.cameras},
            "state": state,
            "task": task,
        }
        return self.predictor.predict(sample, seed=seed)  # (chunk, 4), unnormalised


class OnnxPretrainedPolicy:
    """The same policy run by onnxruntime on an export of the folder (`EvalConfig.backend="onnxruntime"`).
    The noise of each call is the torch backend's for the same seed (`ActionPredictor.noise`), so both
    backends take the same actions (within rounding) and an evaluation does not depend on which ran it."""

    def __init__(self, export_dir: str | Path, *, num_steps: int | None = None, threads: int | None = None):
        from shallowpi.onnx_runtime.runner import OnnxRunner

        self.runner = OnnxRunner(export_dir, threads=threads, num_steps=num_steps)
        proc = self.runner.processor
        if proc is None:
            raise UserError(f"{export_dir} was exported without a processor")
        prefix = mw.camera_key("")
        self.cameras = [key.removeprefix(prefix) for key in proc.camera_map]
        if any(c not in mw.CAMERAS for c in self.cameras):
            raise UserError(f"policy cameras {sorted(proc.camera_map)} are not Meta-World cameras")
        if proc.action_dim != 4:
            raise UserError(f"Meta-World has action dim 4; the policy has {proc.action_dim}")
        self.state_layout = mw.state_layout_for_dim(proc.state_dim)
        self.chunk = self.runner.chunk_size
        self.image_size = proc.image_size

    def noise(self, seed: int) -> np.ndarray:
        import torch  # the torch backend's generator: the same noise for the same seed

        gen = torch.Generator().manual_seed(seed)
        shape = (1, self.runner.chunk_size, self.runner.max_action_dim)
        return torch.randn(shape, generator=gen).numpy()

    def __call__(self, images: dict[str, np.ndarray], state: np.ndarray, task: str, seed: int) -> np.ndarray:
        sample = {
            "images": {mw.camera_key(cam): images[cam] for cam in self.cameras},
            "state": state,
            "task": task,
        }
        return self.runner.predict(sample, noise=self.noise(seed))  # (chunk, 4), unnormalised


# one episode ------------------------------------------------------------------------------------------------


def _call_seed(seed: int, task: str, episode: int, call: int) -> int:
    """Noise seed per policy call, independent of which worker runs the episode."""
    task_id = mw.MT50.index(task) if task in mw.MT50 else sum(map(ord, task))
    return int(np.random.SeedSequence([seed, task_id, episode, call]).generate_state(1)[0])


def run_episode(
    env: mw.MetaWorldEnv, policy: ChunkPolicy, cfg: EvalConfig, episode: int, video_path: Path | None = None
) -> EpisodeResult:
    warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")
    obs = env.reset(episode)
    queue: list[np.ndarray] = []
    frames: list[np.ndarray] = []
    rewards: list[float] = []
    success, calls, policy_s, steps = False, 0, 0.0, 0
    stopped = None
    images = None
    for step in range(cfg.max_steps):
        if not queue or video_path is not None:
            images = env.render()  # camera -> uint8 [H, W, 3], upright
        if video_path is not None:
            frames.append(np.concatenate([images[c] for c in policy.cameras], axis=1))
        if not queue:
            seen = {c: np.zeros_like(v) for c, v in images.items()} if cfg.blank_images else images
            t0 = time.perf_counter()
            try:
                chunk = policy(
                    seen, env.state(obs), env.instruction, _call_seed(cfg.seed, env.task, episode, calls)
                )
                check_actions(chunk)  # whatever the ChunkPolicy: a NaN never reaches the env
            except UnsafeActionError as e:
                stopped = f"unsafe actions at step {step} (policy call {calls + 1}): {e}"
                break
            finally:
                policy_s += time.perf_counter() - t0
                calls += 1
            if chunk.ndim != 2 or chunk.shape[1] != 4:
                raise ValueError(f"policy returned actions of shape {chunk.shape}, expected (chunk, 4)")
            queue = list(chunk[: cfg.n_action_steps or len(chunk)])
        action = np.clip(queue.pop(0), -1.0, 1.0).astype(np.float32)  # the env's Box(-1, 1)
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
    )


def write_mp4(frames: list[np.ndarray], path: str | Path, fps: int) -> Path:
    """uint8 [H, W, 3] frames -> H.264 MP4 (written to a temp file, then renamed)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".mp4")
    os.close(fd)
    try:
        with av.open(tmp, "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps, options={"crf": "23"})
            stream.width, stream.height, stream.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
            stream.codec_context.time_base = Fraction(1, fps)
            for i, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(rgb[: h - h % 2, : w - w % 2]), format="rgb24"
                )
                frame.pts = i
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# workers ----------------------------------------------------------------------------------------------------

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


def default_policy_factory(cfg: EvalConfig) -> ChunkPolicy:
    if cfg.runtime == "onnxruntime":
        threads = cfg.threads_per_worker or max(1, (os.cpu_count() or 1) // cfg.workers)
        return OnnxPretrainedPolicy(cfg.onnx_dir, num_steps=cfg.num_steps, threads=threads)
    return PretrainedPolicy(
        cfg.policy, device=cfg.device, num_steps=cfg.num_steps, truncate_prompt=cfg.truncate_prompt
    )


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


# eval_info.json ---------------------------------------------------------------------------------------------


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def _aggregate(results: list[EpisodeResult]) -> dict:
    return {
        "avg_sum_reward": _mean([r.sum_reward for r in results]),
        "avg_max_reward": _mean([r.max_reward for r in results]),
        "pc_success": _mean([float(r.success) for r in results]) * 100 if results else float("nan"),
        "n_episodes": len(results),
        "n_stopped": sum(r.stopped is not None for r in results),  # episodes stopped for unsafe actions
        "video_paths": [r.video_path for r in results if r.video_path],
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
                    "video_paths": [r.video_path for r in rs if r.video_path],
                    "stopped": [r.stopped for r in rs],  # None, or why the episode was stopped
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
    sizes = {r.image_size for r in results if r.image_size is not None}
    if settings["image_size"] is None and len(sizes) == 1:  # record what was rendered, so reuse can match
        settings["image_size"] = sizes.pop()
    if (Path(cfg.policy) / "config.json").is_file():  # the schedule the policy was sampled with
        from shallowpi.model.checkpoint import read_config

        settings["time_grid"] = read_config(cfg.policy).time_grid(cfg.num_steps)
    return {"per_task": per_task, "per_group": per_group, "overall": overall, "settings": settings}


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
