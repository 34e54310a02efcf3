"""The policy a Meta-World rollout calls: the `ChunkPolicy` protocol and a pretrained folder as one."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from shallowpi.errors import UserError
from shallowpi.sim import metaworld_env as mw
from shallowpi.sim.eval_config import EvalConfig


class ChunkPolicy(Protocol):
    """What a rollout needs: Meta-World cameras to render and a map from observation to action chunk."""

    cameras: list[str]  # Meta-World camera names, e.g. ["corner4", "gripperPOV"]

    def __call__(self, images: dict[str, np.ndarray], state: np.ndarray, task: str, seed: int) -> np.ndarray:
        """images: camera -> uint8 [H, W, 3]; state [state dim] -> actions (chunk, 4) in the env's units.
        A policy may set `state_layout` (a key of metaworld_env.STATE_LAYOUTS; default "hand")."""
        ...


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


def default_policy_factory(cfg: EvalConfig) -> ChunkPolicy:
    return PretrainedPolicy(
        cfg.policy, device=cfg.device, num_steps=cfg.num_steps, truncate_prompt=cfg.truncate_prompt
    )
