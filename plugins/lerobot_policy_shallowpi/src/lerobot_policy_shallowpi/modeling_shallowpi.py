"""ShallowPiPolicy: shallowpi's PiModel behind LeRobot's PreTrainedPolicy contract.

Inputs are what `shallowpi_preprocessor` produced: the model's Observation as `observation.shallowpi.*` keys
and the normalised padded state (read back by `observation_from_plugin`), and normalised padded actions.
Sampling runs shallowpi's InferenceEngine (the path `shallowpi eval` / `serve` use); training runs
`PiModel.loss` with the loss over the dataset's real action dims and steps past an episode's end masked,
as shallowpi's trainer computes it. Weights are saved and loaded in LeRobot's key names (the file
`shallowpi.save_model` writes), so the same model.safetensors serves both tools.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from lerobot.policies.pretrained import PreTrainedPolicy
from safetensors.torch import save_file
from torch import Tensor

from lerobot_policy_shallowpi.configuration_shallowpi import ShallowPiConfig
from shallowpi.data.lerobot_processor import observation_from_plugin
from shallowpi.distill.losses import action_error
from shallowpi.model.checkpoint import (
    EMBED,
    LM_HEAD,
    WEIGHTS_NAME,
    lerobot_state_dict,
    load_state_dict,
    to_external,
)
from shallowpi.model.pi import PiModel

if TYPE_CHECKING:
    from shallowpi.model.rtc import RTCGuidance

logger = logging.getLogger(__name__)


class ShallowPiPolicy(PreTrainedPolicy):
    config_class = ShallowPiConfig
    name = "shallowpi"

    def __init__(self, config: ShallowPiConfig, dataset_stats=None, dataset_meta=None, **kwargs):
        super().__init__(config)
        config.validate_features()
        self.model = PiModel(config.model_config())
        self._engines: dict[int, object] = {}  # batch size -> InferenceEngine
        self.reset()

    # LeRobot's contract --------------------------------------------------------------------------------------
    def reset(self) -> None:
        self._queue: deque[Tensor] = deque(maxlen=self.config.n_action_steps)
        self._rtc_logged = False  # the first guided chunk after a reset is logged (see _guidance)

    def get_optim_params(self):
        return self.parameters()

    def train(self, mode: bool = True):
        self._engines = {}  # engines cache weight-derived tensors: rebuild after any training
        return super().train(mode)

    def _action_dim(self) -> int:
        ft = self.config.action_feature
        return ft.shape[0] if ft is not None else self.model.config.max_action_dim

    def supports_rtc(self) -> bool:
        return True

    @torch.no_grad()
    def predict_action_chunk(
        self,
        batch: dict[str, Tensor],
        noise: Tensor | None = None,
        inference_delay: int | None = None,
        prev_chunk_left_over: Tensor | None = None,
        execution_horizon: int | None = None,
        **kwargs,
    ) -> Tensor:
        """-> (B, chunk, action_dim), normalised (the postprocessor unnormalises).

        Real-time chunking as LeRobot's π0 / π0.5 run it: with `config.rtc_config` enabled and
        `prev_chunk_left_over` given ((T, A) or (B, T, A), the unexecuted tail of the previous chunk in this
        method's normalised output space), the chunk is guided toward it, its first `inference_delay` rows frozen.
        """
        from shallowpi.infer.engine import InferenceEngine

        obs = observation_from_plugin(batch)
        b = obs.batch_size
        if b not in self._engines:  # one engine serves calls in and out of inference mode alike
            self._engines[b] = InferenceEngine(self.model.eval(), batch_size=b)
        guidance = self._guidance(prev_chunk_left_over, inference_delay, execution_horizon, b)
        actions = self._engines[b].sample_actions(obs, noise=noise, guidance=guidance)  # [B, chunk, max_dim]
        return actions[:, :, : self._action_dim()]

    def _guidance(
        self, prev: Tensor | None, delay: int | None, horizon: int | None, batch: int
    ) -> RTCGuidance | None:
        """LeRobot's semantics: no guidance unless RTC is enabled and a left-over is given; a delay past the
        left-over freezes all of it (LeRobot clips the frozen rows to the horizon); rows past the chunk are
        ignored."""
        from shallowpi.model.rtc import RTCConfig, RTCGuidance

        rtc = self.config.rtc_config
        if rtc is None or not rtc.enabled or prev is None:
            return None
        c = self.model.config
        prev = prev if prev.ndim == 3 else prev[None].expand(batch, -1, -1)  # (B, T, A)
        # lerobot-rollout pads the left-over with zero rows to execution_horizon, which may pass the chunk:
        # rows past the chunk have no row of the new chunk to guide, so they are dropped
        prev = prev[:, : c.chunk_size]
        cfg = RTCConfig(
            prefix_attention_schedule=getattr(
                rtc.prefix_attention_schedule, "value", rtc.prefix_attention_schedule
            ),
            max_guidance_weight=float(rtc.max_guidance_weight),
            execution_horizon=int(horizon if horizon is not None else rtc.execution_horizon),
        )
        delay = min(int(delay or 0), prev.shape[1])
        guidance = RTCGuidance.build(
            cfg,
            prev.float(),
            inference_delay=delay,
            chunk_size=c.chunk_size,
            action_dim=c.max_action_dim,
            batch=batch,
        )
        if not self._rtc_logged:  # once per run: a rollout's log then says that the policy does guide
            logger.info(
                "real-time chunking: chunk guided toward the previous chunk's %d-row left-over "
                "(frozen rows %d, schedule %s, execution horizon %d, max guidance weight %g)",
                prev.shape[1],
                delay,
                cfg.prefix_attention_schedule,
                cfg.execution_horizon,
                cfg.max_guidance_weight,
            )
            self._rtc_logged = True
        return guidance

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], noise: Tensor | None = None, **kwargs) -> Tensor:
        """One action (B, action_dim); a new chunk is sampled when the queue of n_action_steps runs out."""
        if not self._queue:
            chunk = self.predict_action_chunk(batch, noise=noise)[:, : self.config.n_action_steps]
            self._queue.extend(chunk.transpose(0, 1))  # n_action_steps x [B, action_dim]
        return self._queue.popleft()

    def forward(self, batch: dict[str, Tensor], noise: Tensor | None = None, time: Tensor | None = None):
        """Flow-matching loss on a preprocessed batch -> (loss, {"loss": float})."""
        actions = batch["action"]  # [B, chunk, max_action_dim], normalised
        err = self.model.loss(
            observation_from_plugin(batch), actions, noise=noise, time=time
        )  # [B, chunk, D]
        # shallowpi's task loss: real action dims only, chunk steps past the episode end zeroed
        loss = action_error(err, self._action_dim(), batch.get("action_is_pad"))
        return loss, {"loss": loss.item()}

    # weights in LeRobot's key names ------------------------------------------------------------------------
    def _save_pretrained(self, save_directory: Path, state_dict: dict | None = None) -> None:
        self.config._save_pretrained(save_directory)
        if state_dict is None:
            sd = lerobot_state_dict(self.model)
        else:  # LeRobot >= 0.5 hands a gathered (FSDP full) state dict in module names: "model.<ours>"
            sd = {"model." + to_external(k.removeprefix("model.")): v for k, v in state_dict.items()}
            sd["model." + LM_HEAD] = sd["model." + EMBED]
        sd = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
        sd.pop("model." + EMBED)  # tied: stored once, as lm_head (what shallowpi.save_model writes)
        save_file(sd, str(Path(save_directory) / WEIGHTS_NAME), metadata={"format": "pt"})

    @classmethod
    def _load_as_safetensor(cls, model, model_file: str, map_location: str, strict: bool):
        load_state_dict(model.model, model_file)  # strict, names every bad key
        model.to(map_location)
        return model
