"""ShallowPiPolicy: shallowpi's PiModel behind LeRobot's PreTrainedPolicy contract.

Inputs are what `shallowpi_preprocessor` produced: the model's Observation as `observation.shallowpi.*` keys
and the normalised padded state (read back by `observation_from_plugin`), and normalised padded actions.
Sampling runs shallowpi's InferenceEngine (the path `shallowpi eval` / `serve` use); training runs
`PiModel.loss` with the loss over the dataset's real action dims and steps past an episode's end masked,
as shallowpi's trainer computes it. Weights are saved and loaded in LeRobot's key names (the file
`shallowpi.save_model` writes), so the same model.safetensors serves both tools.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

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


class ShallowPiPolicy(PreTrainedPolicy):
    config_class = ShallowPiConfig
    name = "shallowpi"

    def __init__(self, config: ShallowPiConfig, dataset_stats=None, dataset_meta=None, **kwargs):
        super().__init__(config)
        config.validate_features()
        self.model = PiModel(config.model_config())
        self._engines: dict[int, object] = {}
        self.reset()

    # LeRobot's contract --------------------------------------------------------------------------------------
    def reset(self) -> None:
        self._queue: deque[Tensor] = deque(maxlen=self.config.n_action_steps)

    def get_optim_params(self):
        return self.parameters()

    def train(self, mode: bool = True):
        self._engines = {}  # engines cache weight-derived tensors: rebuild after any training
        return super().train(mode)

    def _action_dim(self) -> int:
        ft = self.config.action_feature
        return ft.shape[0] if ft is not None else self.model.config.max_action_dim

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], noise: Tensor | None = None, **kwargs) -> Tensor:
        """-> (B, chunk, action_dim), normalised (the postprocessor unnormalises)."""
        from shallowpi.infer.engine import InferenceEngine

        obs = observation_from_plugin(batch)
        b = obs.batch_size
        if b not in self._engines:
            self._engines[b] = InferenceEngine(self.model.eval(), batch_size=b)
        actions = self._engines[b].sample_actions(obs, noise=noise)  # [B, chunk, max_action_dim]
        return actions[:, :, : self._action_dim()]

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
