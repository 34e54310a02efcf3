"""PiPolicy: the torch backend of the served policy (`ServedPolicy`): a model and its processors.

    obs (client keys) --ObsMapping--> sample {"images", "state", "task"}        (ServedPolicy.prepare)
        --Preprocessor, collate--> normalise state, resize-with-pad images, tokenise prompt --> Observation (B = 1)
        --InferenceEngine.sample_actions--> normalised (1, chunk, max_action_dim)
        --Postprocessor--> unnormalised, cropped: (chunk, action_dim) float32   (ActionPredictor.predict)

Contract, checks and frame cap: `shallowpi.serve.served_policy`. The policy is not thread-safe; the server
calls `infer` from one thread.

Noise: with `seed` set (the default, 0), every request draws its flow-matching noise from a generator
seeded with `seed`, so the same observation always gives the same actions (reproducible episodes, and a
client can compare with a direct call). `seed=None` draws fresh noise every call, as openpi does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shallowpi.data.processor import Postprocessor, Preprocessor
from shallowpi.infer.predictor import ActionPredictor, RTCRequest
from shallowpi.model import PiModel
from shallowpi.model.rtc import RTCConfig
from shallowpi.serve.obs_mapping import ObsMapping
from shallowpi.serve.rtc_keys import DELAY_KEY, PREV_ACTIONS_KEY, RTCFields
from shallowpi.serve.served_policy import ServedPolicy


class PiPolicy(ServedPolicy):
    backend = "torch"

    def __init__(
        self,
        model: PiModel,  # in eval mode, on its device
        preprocessor: Preprocessor,
        postprocessor: Postprocessor,
        *,
        obs_mapping: ObsMapping | str = "libero",
        default_prompt: str | None = None,
        num_steps: int | None = None,
        seed: int | None = 0,
        name: str = "shallowpi",
        truncate_prompt: bool | None = None,  # None: the processor config's choice
        rtc: RTCConfig | None = None,  # how real-time chunking requests are guided (None: the defaults)
    ) -> None:
        predictor = ActionPredictor(
            model, preprocessor, postprocessor, num_steps=num_steps, truncate_prompt=truncate_prompt
        )
        self._bind(
            predictor, obs_mapping=obs_mapping, default_prompt=default_prompt, seed=seed, name=name, rtc=rtc
        )

    @classmethod
    def from_predictor(cls, predictor: ActionPredictor, **kwargs: Any) -> PiPolicy:
        """Serve an `ActionPredictor` (model + processors + sampling settings) as it is."""
        policy = cls.__new__(cls)
        policy._bind(predictor, **kwargs)
        return policy

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | None = None,
        num_steps: int | None = None,
        truncate_prompt: bool | None = None,
        **kwargs: Any,
    ) -> PiPolicy:
        """Model and processors of one pretrained folder (`ActionPredictor.from_pretrained`), served."""
        predictor = ActionPredictor.from_pretrained(
            path, device=device, num_steps=num_steps, truncate_prompt=truncate_prompt
        )
        return cls.from_predictor(predictor, **{"name": Path(path).name, **kwargs})

    def _bind(
        self,
        predictor: ActionPredictor,
        *,
        obs_mapping: ObsMapping | str = "libero",
        default_prompt: str | None = None,
        seed: int | None = 0,
        name: str = "shallowpi",
        rtc: RTCConfig | None = None,
    ) -> None:
        self.predictor = predictor
        self.rtc = (rtc or RTCConfig()).validate()
        self.model, self.config = predictor.model, predictor.config
        self.pre, self.post = predictor.pre, predictor.post
        self.num_steps, self.seed = predictor.num_steps, seed
        c = self.config
        super().__init__(
            # The processor's camera key feeding each model slot (None: slot always masked).
            cameras=tuple(self.pre.slot_source.get(s) for s in self.pre.config.cameras),
            state_dim=self.pre.state_dim,
            action_dim=self.post.action_dim,
            chunk_size=c.chunk_size,
            obs_mapping=obs_mapping,
            default_prompt=default_prompt,
            name=name,
        )

    # Backend ----------------------------------------------------------------------------------------------
    def predict(self, sample: dict) -> np.ndarray:
        return self.predictor.predict(sample, seed=self.seed)

    def predict_rtc(self, sample: dict, rtc: RTCFields) -> np.ndarray:
        request = RTCRequest(rtc.prev_actions, rtc.inference_delay, self.rtc)
        return self.predictor.predict(sample, seed=self.seed, rtc=request)

    @property
    def max_task_chars(self) -> int:
        return self.pre.max_task_chars

    def check_task(self, task: str) -> None:
        self.pre.check_task(task)

    def describe(self) -> dict:
        c = self.config
        return {
            "variant": c.variant,
            "depth": c.depth,
            "layer_map": list(c.layer_map) if c.layer_map is not None else None,
            "cameras": dict(zip(c.cameras, self.cameras, strict=True)),  # model slot -> processor camera
            "image_size": c.vision.image_size,
            "image_tokens": c.vision.num_tokens,  # per camera in the backbone's prefix (after any merge)
            "vision_depth": c.vision.depth,
            "num_steps": c.num_inference_steps if self.num_steps is None else self.num_steps,
            "time_grid": c.time_grid(self.num_steps),  # the time grid every reply is sampled with
            "rtc": {  # real-time chunking: the request keys and how they are guided
                "keys": [PREV_ACTIONS_KEY, DELAY_KEY],
                "prefix_attention_schedule": self.rtc.prefix_attention_schedule,
                "max_guidance_weight": self.rtc.max_guidance_weight,
                "execution_horizon": self.rtc.execution_horizon,
            },
        }
