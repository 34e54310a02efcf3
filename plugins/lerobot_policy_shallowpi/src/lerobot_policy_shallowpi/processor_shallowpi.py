"""LeRobot processor pipelines around shallowpi's own Preprocessor.

    preprocessor:  rename_observations_processor (LeRobot's; lerobot-eval overrides its map)
                   -> to_batch_processor -> normalizer_processor (LeRobot's) -> shallowpi_preprocessor
                   -> device_processor
    postprocessor: unnormalizer_processor (LeRobot's) -> device_processor (cpu)

The stats live in LeRobot's own normaliser steps, the layout of its π pipelines: `lerobot-train` from a
pretrained folder (`--policy.path`, `--resume`) hands those steps the dataset's stats by name, as it does for
its π policies. `shallowpi_preprocessor` runs the rest of shallowpi's processor on each sample of the batch
(camera map, resize-with-pad, [-1, 1] pixels, state / action padding, the π0 / π0.5 prompt, SentencePiece
tokenisation), so LeRobot feeds the model what shallowpi's own commands feed it (LeRobot's normaliser uses
the formulas and eps shallowpi's does). Its JSON config is the processor config, with IDENTITY
normalisation; its state file holds the tokenizer's bytes, so a saved pipeline needs no other file. The
model's Observation travels as `observation.shallowpi.*` keys and `observation.state`
(`shallowpi.data.lerobot_processor.PLUGIN_OBSERVATION_KEYS`).

Folders of the first plugin layout (no normaliser steps: `shallowpi_preprocessor` normalised with the stats
in its state file, `shallowpi_postprocessor` unnormalised) still load and run; `lerobot-train` cannot
fine-tune them (its overrides name steps they lack): `shallowpi to-lerobot` rewrites one in this layout.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from lerobot.processor import (
    AddBatchDimensionProcessorStep,
    DeviceProcessorStep,
    NormalizerProcessorStep,
    PolicyProcessorPipeline,
    ProcessorStep,
    ProcessorStepRegistry,
    RenameObservationsProcessorStep,
    TransitionKey,
    UnnormalizerProcessorStep,
)
from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action

from lerobot_policy_shallowpi.configuration_shallowpi import ShallowPiConfig
from shallowpi.data.lerobot_processor import (
    PLUGIN_POST,
    PLUGIN_PRE,
    TOKENIZER_KEY,
    plugin_observation,
    plugin_post_state,
    plugin_pre_state,
    tokenizer_from_bytes,
)
from shallowpi.data.processor import Postprocessor, Preprocessor, ProcessorConfig, collate, collate_actions
from shallowpi.data.stats import Stats
from shallowpi.data.tokenizer import Tokenizer, load_tokenizer


def _unflat(state: dict[str, torch.Tensor]) -> Stats:
    out: Stats = {}
    for key, v in state.items():
        if key != TOKENIZER_KEY:
            feat, name = key.rsplit(".", 1)
            out.setdefault(feat, {})[name] = v.double().numpy()
    return out


@ProcessorStepRegistry.register(PLUGIN_PRE)
@dataclass
class ShallowPiPreprocessorStep(ProcessorStep):
    processor: dict[str, Any] = field(default_factory=dict)  # ProcessorConfig.to_dict()
    stats: Stats | None = None  # not in the JSON but the state file; {} when the step does not normalise
    tokenizer: Tokenizer | None = None
    _pre: Preprocessor | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.config = ProcessorConfig.from_dict(self.processor)
        self._build()

    def _build(self) -> None:
        if self.stats is not None and self.tokenizer is not None:
            self._pre = Preprocessor(self.config, self.stats, self.tokenizer)

    @property
    def preprocessor(self) -> Preprocessor:
        if self._pre is None:
            raise RuntimeError(f"{PLUGIN_PRE}: no stats / tokenizer loaded (load the pipeline's state file)")
        return self._pre

    def __call__(self, transition):
        pre = self.preprocessor
        c = pre.config
        obs = dict(transition.get(TransitionKey.OBSERVATION) or {})
        comp = dict(transition.get(TransitionKey.COMPLEMENTARY_DATA) or {})
        action = transition.get(TransitionKey.ACTION)
        if c.state_key not in obs:
            raise ValueError(f"observation lacks {c.state_key!r} (has {sorted(obs)})")
        state = obs[c.state_key]  # [B, S]
        b = state.shape[0]
        tasks = comp.get("task")
        if tasks is None:
            raise ValueError("the shallowpi policy needs a task string (complementary data 'task')")
        tasks = [tasks] * b if isinstance(tasks, str) else list(tasks)
        pad = comp.get("action_is_pad")
        examples = []
        for i in range(b):
            sample = {
                "images": {k: obs[k][i].detach().cpu() for k in c.camera_map if k in obs},
                "state": state[i].detach().cpu().float(),
                "task": tasks[i],
            }
            if action is not None and torch.is_tensor(action) and action.ndim == 3:
                sample["actions"] = action[i].detach().cpu().float()  # [chunk, A]
                sample["action_is_pad"] = None if pad is None else pad[i].detach().cpu()
            examples.append(pre(sample))
        new = transition.copy()
        new[TransitionKey.OBSERVATION] = plugin_observation(collate(examples))
        if "actions" in examples[0]:
            actions, action_is_pad = collate_actions(examples)
            new[TransitionKey.ACTION] = actions  # [B, chunk, max_action_dim], normalised
            comp["action_is_pad"] = action_is_pad  # [B, chunk]
            new[TransitionKey.COMPLEMENTARY_DATA] = comp
        return new

    def get_config(self) -> dict[str, Any]:
        return {"processor": self.config.to_dict()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return plugin_pre_state(self.preprocessor)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if TOKENIZER_KEY not in state:
            raise ValueError(f"{PLUGIN_PRE} state lacks the tokenizer ({TOKENIZER_KEY})")
        self.stats = _unflat(state)
        self.tokenizer = tokenizer_from_bytes(state[TOKENIZER_KEY].numpy().tobytes())
        self._build()

    def transform_features(self, features):
        return features


@ProcessorStepRegistry.register(PLUGIN_POST)
@dataclass
class ShallowPiPostprocessorStep(ProcessorStep):
    """Unnormalise and crop to the action dim: the first plugin layout's postprocessor (kept so that its
    folders load; new pipelines unnormalise with LeRobot's step)."""

    processor: dict[str, Any] = field(default_factory=dict)
    stats: Stats | None = None
    _post: Postprocessor | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.config = ProcessorConfig.from_dict(self.processor)
        if self.stats is not None:
            self._post = Postprocessor(self.config, self.stats)

    def __call__(self, transition):
        if self._post is None:
            raise RuntimeError(f"{PLUGIN_POST}: no stats loaded (load the pipeline's state file)")
        action = transition.get(TransitionKey.ACTION)
        new = transition.copy()
        # [..., max_action_dim] normalised -> [..., action_dim] robot units
        new[TransitionKey.ACTION] = self._post(action.detach().float().cpu()).to(action.device)
        return new

    def get_config(self) -> dict[str, Any]:
        return {"processor": self.config.to_dict()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self._post is None else plugin_post_state(self._post)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.stats = _unflat(state)
        self._post = Postprocessor(self.config, self.stats)

    def transform_features(self, features):
        return features


def processor_config(config: ShallowPiConfig) -> ProcessorConfig:
    """shallowpi's processor for this policy, normalisation included (what shallowpi reads back from the
    saved pipelines: LeRobot's normaliser steps + the plugin's step)."""
    model = config.model_config()
    state_ft, action_ft = config.robot_state_feature, config.action_feature
    norm = {k: getattr(v, "value", v) for k, v in config.normalization_mapping.items()}
    return ProcessorConfig(
        variant=model.variant,
        camera_map=config.resolved_camera_map(),
        cameras=model.cameras,
        image_size=model.vision.image_size,
        max_state_dim=model.max_state_dim,
        max_action_dim=model.max_action_dim,
        chunk_size=model.chunk_size,
        tokenizer_max_length=model.tokenizer_max_length,
        state_norm=norm.get("STATE", "IDENTITY"),
        action_norm=norm.get("ACTION", "IDENTITY"),
        state_dim=state_ft.shape[0] if state_ft is not None else None,
        action_dim=action_ft.shape[0] if action_ft is not None else None,
        pad_state_in_prompt=config.pad_state_in_prompt,
    )


def make_shallowpi_pre_post_processors(config: ShallowPiConfig, dataset_stats=None):
    """LeRobot's factory hook (`make_<type>_pre_post_processors`) for a fresh shallowpi policy."""
    from lerobot.utils.constants import POLICY_POSTPROCESSOR_DEFAULT_NAME, POLICY_PREPROCESSOR_DEFAULT_NAME

    # built with the real modes first: a mode shallowpi cannot read back fails here, as one error
    pcfg = processor_config(config)
    tokenizer = load_tokenizer(config.tokenizer_path)
    if tokenizer.vocab_size > config.model_config().vocab_size:
        raise ValueError(
            f"tokenizer {tokenizer.path} has {tokenizer.vocab_size} pieces, more than the model's vocabulary "
            f"{config.model_config().vocab_size}"
        )
    step = dataclasses.replace(pcfg, state_norm="IDENTITY", action_norm="IDENTITY")  # LeRobot's step does it
    features = {**config.input_features, **config.output_features}
    pre = PolicyProcessorPipeline(
        steps=[
            RenameObservationsProcessorStep(rename_map={}),
            AddBatchDimensionProcessorStep(),
            NormalizerProcessorStep(
                features=features, norm_map=config.normalization_mapping, stats=dataset_stats
            ),
            ShallowPiPreprocessorStep(processor=step.to_dict(), stats={}, tokenizer=tokenizer),
            DeviceProcessorStep(device=config.device),
        ],
        name=POLICY_PREPROCESSOR_DEFAULT_NAME,
    )
    post = PolicyProcessorPipeline(
        steps=[
            UnnormalizerProcessorStep(
                features=config.output_features, norm_map=config.normalization_mapping, stats=dataset_stats
            ),
            DeviceProcessorStep(device="cpu"),
        ],
        name=POLICY_POSTPROCESSOR_DEFAULT_NAME,
        to_transition=policy_action_to_transition,
        to_output=transition_to_policy_action,
    )
    return pre, post
