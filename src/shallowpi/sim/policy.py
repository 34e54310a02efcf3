"""The policy a Meta-World rollout calls: the `ChunkPolicy` protocol and a pretrained folder as one."""

from __future__ import annotations

import os
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
        A policy may set `state_layout` (a key of metaworld_env.STATE_LAYOUTS; default "hand"). With `--rtc`
        it is also called with `prev_chunk` (n, 4) and `inference_delay`."""
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

    def __call__(
        self,
        images: dict[str, np.ndarray],
        state: np.ndarray,
        task: str,
        seed: int,
        prev_chunk: np.ndarray | None = None,
        inference_delay: int = 0,
    ) -> np.ndarray:
        """`prev_chunk` (n, 4): real-time chunking toward the old chunk's unexecuted tail."""
        from shallowpi.infer.predictor import RTCRequest

        sample = {
            "images": {mw.camera_key(cam): images[cam] for cam in self.cameras},
            "state": state,
            "task": task,
        }
        rtc = None if prev_chunk is None else RTCRequest(prev_chunk, inference_delay)
        return self.predictor.predict(sample, seed=seed, rtc=rtc)  # (chunk, 4), unnormalised


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
        self.image_size = proc.config.image_size

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


def default_policy_factory(cfg: EvalConfig) -> ChunkPolicy:
    if cfg.runtime == "onnxruntime":
        threads = cfg.threads_per_worker or max(1, (os.cpu_count() or 1) // cfg.workers)
        return OnnxPretrainedPolicy(cfg.onnx_dir, num_steps=cfg.num_steps, threads=threads)
    return PretrainedPolicy(
        cfg.policy, device=cfg.device, num_steps=cfg.num_steps, truncate_prompt=cfg.truncate_prompt
    )
