"""ActionPredictor: a model and its processors, one processor sample in, one unnormalised action chunk out.

    sample {"images", "state", "task"}
        --Preprocessor, collate--> normalise state, resize-with-pad images, tokenise prompt --> Observation (B = 1)
        --InferenceEngine.sample_actions--> normalised (1, chunk, max_action_dim)
        --Postprocessor--> unnormalised, cropped: (chunk, action_dim) float32, checked finite

The inference path the websocket server (`shallowpi.serve.policy.PiPolicy`) and simulation evaluation share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shallowpi.data.processor import Postprocessor, Preprocessor, collate
from shallowpi.device import resolve_device
from shallowpi.errors import UserError
from shallowpi.infer.actions import check_actions
from shallowpi.infer.engine import InferenceEngine
from shallowpi.model import PiModel, load_model
from shallowpi.model.rtc import RTCConfig, RTCGuidance
from shallowpi.pretrained import load_processor


@dataclass
class RTCRequest:
    """Real-time chunking for one prediction: the previous chunk's unexecuted tail at request time
    (n, action_dim), robot units, row 0 = the new chunk's row 0, and the control steps the robot executes
    while the new chunk is sampled."""

    prev_chunk: np.ndarray
    inference_delay: int
    config: RTCConfig = field(default_factory=RTCConfig)


class ActionPredictor:
    """A model and its processors: one processor sample in, one unnormalised action chunk out.

    The inference path shared by the websocket server (`PiPolicy`) and simulation evaluation, so both see
    exactly the inputs training saw. Runs the fast `InferenceEngine` (equal to the reference path).
    """

    def __init__(
        self,
        model: PiModel,
        preprocessor: Preprocessor,
        postprocessor: Postprocessor,
        *,
        num_steps: int | None = None,
        truncate_prompt: bool | None = None,  # None: the processor config's choice
    ) -> None:
        pc, cfg = preprocessor.config, model.config
        if tuple(pc.cameras) != tuple(cfg.cameras) or pc.image_size != cfg.vision.image_size:
            raise UserError(
                f"processor (slots {list(pc.cameras)}, {pc.image_size} px) does not fit the model "
                f"(slots {list(cfg.cameras)}, {cfg.vision.image_size} px)"
            )
        if num_steps is not None and num_steps < 1:
            raise UserError(f"num_steps must be >= 1, got {num_steps}")
        self.model, self.config = model.eval(), cfg
        self.pre, self.post = preprocessor, postprocessor
        cfg.time_grid(num_steps)  # a bad step count fails here, not on the first request
        self.num_steps = num_steps
        if truncate_prompt is not None:
            preprocessor.config.truncate_prompt = truncate_prompt
        self.engine = InferenceEngine(self.model, batch_size=1)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, device: str | None = None, **kwargs: Any
    ) -> ActionPredictor:
        """Model (`shallowpi.load_model`) and processors (`load_processor`) from one pretrained folder."""
        model = load_model(path, device=resolve_device(device))
        pre, post = load_processor(path)
        return cls(model, pre, post, **kwargs)

    def guidance(self, rtc: RTCRequest) -> RTCGuidance:
        """The request's previous chunk (n, action_dim) in robot units -> guidance in the model's space."""
        prev = torch.as_tensor(np.asarray(rtc.prev_chunk, dtype=np.float32))
        if prev.ndim != 2 or prev.shape[1] != self.post.action_dim:
            raise UserError(
                f"previous chunk: expected shape (n, {self.post.action_dim}) with 1 <= n <= "
                f"{self.config.chunk_size}, got {tuple(prev.shape)}"
            )
        c = self.config
        try:
            return RTCGuidance.build(
                rtc.config,
                self.post.normalize(prev)[None].to(self.model.device),
                inference_delay=rtc.inference_delay,
                chunk_size=c.chunk_size,
                action_dim=c.max_action_dim,
            )
        except ValueError as e:
            raise UserError(str(e)) from None

    def noise(self, seed: int | None) -> torch.Tensor | None:
        """Flow-matching noise from a CPU generator (same noise on every device); None: fresh noise."""
        if seed is None:
            return None
        c = self.config
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return torch.randn((1, c.chunk_size, c.max_action_dim), generator=gen).to(self.model.device)

    def predict(self, sample: dict, *, seed: int | None = None, rtc: RTCRequest | None = None) -> np.ndarray:
        """sample {"images": {camera: image}, "state": (S,), "task": str} -> (chunk, action_dim) float32.
        `rtc`: real-time chunking toward the unexecuted tail of the previous chunk (robot action space)."""
        guidance = None if rtc is None else self.guidance(rtc)
        # the VJP of jacobian guidance needs autograd: no inference tensors then
        with torch.inference_mode(guidance is None or not guidance.config.jacobian), torch.no_grad():
            obs = collate([self.pre(sample)]).to(self.model.device)  # B = 1
            noise = self.noise(seed)
            actions = self.engine.sample_actions(
                obs, noise=noise, num_steps=self.num_steps, guidance=guidance
            )
            actions = self.post(actions.float().cpu())  # (1, chunk, action_dim), unnormalised
            out = actions[0].numpy().astype(np.float32, copy=False)
        check_actions(out)
        return out
