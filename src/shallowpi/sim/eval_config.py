"""What an evaluation runs: `EvalConfig` (tasks, episodes, seeds, workers, videos) and its checks.

Episode e of task T starts from `MT1(T, seed + e // 50).train_tasks[e % 50]` (seed 1000 by default: the
demos use 0), so results do not depend on the number of workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from shallowpi.device import resolve_device
from shallowpi.errors import MissingFileError, UserError
from shallowpi.sim import DEFAULT_WORKERS
from shallowpi.sim import metaworld_env as mw

CONFIGS_PER_SEED = 50  # MT1(task, seed).train_tasks has 50 configurations
MAX_PATH_LENGTH = mw.MAX_PATH_LENGTH


def policy_horizon(policy: str | Path) -> tuple[int | None, int | None]:
    """(n_action_steps, chunk_size) of a policy folder's config.json: its own re-planning horizon (LeRobot's
    field, which LeRobot's action queue follows too) and its chunk; None for what it does not state (both
    without a config.json). One clear error when n_action_steps is not an integer in [1, chunk_size]."""
    path = Path(policy) / "config.json"
    if not path.is_file():
        return None, None
    raw = json.loads(path.read_text())
    steps, chunk = raw.get("n_action_steps"), raw.get("chunk_size")
    if steps is not None and (
        isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or (chunk and steps > chunk)
    ):
        raise UserError(
            f"{path}: n_action_steps must be an integer in [1, chunk_size={chunk}], got {steps!r}"
        )
    return steps, chunk


@dataclass
class EvalConfig:
    policy: str  # pretrained folder (model + processor)
    tasks: list[str]
    episodes_per_task: int = 50
    seed: int = 1000
    max_steps: int = 200
    n_action_steps: int | None = (
        None  # None: the policy's own (`policy_n_action_steps`), else the whole chunk
    )
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
    inference_delay: int = 0  # control steps the old chunk keeps running while the next one is sampled
    rtc: bool = False  # sample each chunk with real-time chunking toward the old chunk's tail

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)  # recorded resolved in eval_info.json

    @cached_property
    def policy_n_action_steps(self) -> int | None:
        """The policy's own re-planning horizon (`policy_horizon`); None when the folder states none."""
        return policy_horizon(self.policy)[0]

    @property
    def actions_per_call(self) -> int | None:
        """Actions run open-loop from each chunk: --n-action-steps, else the policy's own; None: the chunk."""
        return self.n_action_steps or self.policy_n_action_steps

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
        if self.seed < 0:
            raise UserError(f"seed must be >= 0 (Meta-World's MT1 seed), got {self.seed}")
        if self.image_size is not None and self.image_size < 1:
            raise UserError(f"image-size must be >= 1, got {self.image_size}")
        if self.videos_per_task < 0:
            raise UserError(f"videos-per-task must be >= 0, got {self.videos_per_task}")
        if not self.tasks:
            raise UserError("no tasks to evaluate")
        if not Path(self.policy).is_dir():
            raise MissingFileError(f"policy folder not found: {self.policy}")
        self.policy_n_action_steps  # noqa: B018 -- a bad config.json value fails here, before any worker starts
        self._check_delay()
        if self.runtime == "onnxruntime" and self.truncate_prompt:
            raise UserError("--truncate-prompt is not available with the onnxruntime backend")
        if self.rtc and self.runtime == "onnxruntime":
            raise UserError("--rtc needs the torch backend (the onnxruntime export has no guided sampler)")

    def _check_delay(self) -> None:
        """The delay fits the chunk: the next request leaves d steps before a chunk's window of actions ends,
        and a later chunk runs from index d, so d <= actions per chunk and d + actions per chunk <= chunk."""
        d = self.inference_delay
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise UserError(f"inference-delay must be an integer >= 0, got {d!r}")
        if d == 0:
            return
        chunk = policy_horizon(self.policy)[1]
        n = self.actions_per_call or chunk
        if n is not None and d > n:
            raise UserError(f"inference-delay {d} is more than the {n} actions run per chunk")
        if chunk is not None and d + n > chunk:
            raise UserError(
                f"inference-delay {d} + {n} actions per chunk exceed the chunk of {chunk}: "
                f"pass --n-action-steps <= {chunk - d}"
            )
