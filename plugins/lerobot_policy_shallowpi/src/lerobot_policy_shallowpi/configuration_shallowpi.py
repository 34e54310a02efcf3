"""`--policy.type=shallowpi`: a π0 / π0.5 of any depth, described by shallowpi's sizes object.

A loaded checkpoint carries everything in its `"shallowpi"` object (backbone / expert / vision sizes,
vocabulary, the student's layer map, the model's camera slots and, for a step-distilled student, the Euler
time grid it samples on: `"sampling": {"num_steps": K, "time_grid": [1.0, ..., 0.0]}` with K =
num_inference_steps; a grid that is bad or disagrees with num_inference_steps fails building the policy,
one error naming both). A fresh one (lerobot-train without `--policy.path`) is built from `preset`
(shallowpi.model.config.PRESETS, default the Meta-World test bed) at `depth`, with one camera slot per visual
input feature of the dataset; the resolved sizes are written back into `shallowpi` so that the saved
config.json describes the model exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import FeatureType, NormalizationMode
from lerobot.optim.optimizers import AdamWConfig
from lerobot.optim.schedulers import CosineDecayWithWarmupSchedulerConfig
from lerobot.policies.rtc.configuration_rtc import RTCConfig

from shallowpi.model.config import PiConfig, preset
from shallowpi.model.lerobot_config import PLUGIN_TYPE, config_from_lerobot

_GEMMA_KEYS = ("width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim")
_VISION_KEYS = ("image_size", "patch_size", "width", "depth", "mlp_dim", "num_heads")
# config fields that config_from_lerobot reads as they are
_SCALARS = (
    "chunk_size",
    "max_state_dim",
    "max_action_dim",
    "num_inference_steps",
    "tokenizer_max_length",
    "min_period",
    "max_period",
    "time_sampling_beta_alpha",
    "time_sampling_beta_beta",
    "time_sampling_scale",
    "time_sampling_offset",
    "dtype",
)


@PreTrainedConfig.register_subclass(PLUGIN_TYPE)
@dataclass
class ShallowPiConfig(PreTrainedConfig):
    variant: str = "pi05"  # "pi0" | "pi05"
    preset: str = "testbed"  # sizes of a fresh model (ignored once `shallowpi` is set)
    depth: int | None = None  # depth of a fresh model (None: the preset's)
    shallowpi: dict[str, Any] | None = None  # sizes, layer map, camera slots, time grid (module docstring)
    camera_map: dict[str, str] = field(default_factory=dict)  # input camera -> model slot; {}: identity
    tokenizer_path: str | None = None  # SentencePiece model of a fresh model (None: shallowpi's test bed)
    pad_state_in_prompt: bool = False  # π0.5 prompt: bin the zero-padded state (LeRobot 0.4.4) or not

    n_obs_steps: int = 1
    chunk_size: int = 10
    n_action_steps: int = 10
    max_state_dim: int = 32
    max_action_dim: int = 32
    num_inference_steps: int = 10
    tokenizer_max_length: int = 48
    image_resolution: tuple[int, int] | None = None  # None: the preset's (or the sizes object's) image size
    min_period: float = 4e-3
    max_period: float = 4.0
    time_sampling_beta_alpha: float = 1.5
    time_sampling_beta_beta: float = 1.0
    time_sampling_scale: float = 0.999
    time_sampling_offset: float = 0.001
    dtype: str = "float32"
    rtc_config: RTCConfig | None = None  # real-time chunking, as LeRobot's π0 / π0.5 take it
    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {
            "VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode.QUANTILES,
            "ACTION": NormalizationMode.QUANTILES,
        }
    )

    optimizer_lr: float = 2.5e-5
    optimizer_betas: tuple[float, float] = (0.9, 0.95)
    optimizer_eps: float = 1e-8
    optimizer_weight_decay: float = 0.01
    optimizer_grad_clip_norm: float = 1.0
    scheduler_warmup_steps: int = 1_000
    scheduler_decay_steps: int = 30_000
    scheduler_decay_lr: float = 2.5e-6

    def __post_init__(self):
        super().__post_init__()
        if self.variant not in ("pi0", "pi05"):
            raise ValueError(f"policy.variant must be 'pi0' or 'pi05', got {self.variant!r}")
        if self.n_action_steps > self.chunk_size:
            raise ValueError(f"n_action_steps {self.n_action_steps} exceeds chunk_size {self.chunk_size}")

    # LeRobot's contract --------------------------------------------------------------------------------------
    @property
    def observation_delta_indices(self) -> None:
        return None

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size))

    @property
    def reward_delta_indices(self) -> None:
        return None

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig(
            lr=self.optimizer_lr,
            betas=self.optimizer_betas,
            eps=self.optimizer_eps,
            weight_decay=self.optimizer_weight_decay,
            grad_clip_norm=self.optimizer_grad_clip_norm,
        )

    def get_scheduler_preset(self) -> CosineDecayWithWarmupSchedulerConfig:
        return CosineDecayWithWarmupSchedulerConfig(
            peak_lr=self.optimizer_lr,
            decay_lr=self.scheduler_decay_lr,
            num_warmup_steps=self.scheduler_warmup_steps,
            num_decay_steps=self.scheduler_decay_steps,
        )

    def validate_features(self) -> None:
        if not self.image_features:
            raise ValueError("the shallowpi policy needs at least one camera (VISUAL input feature)")
        if self.robot_state_feature is None:
            raise ValueError("the shallowpi policy needs observation.state")
        if self.action_feature is None:
            raise ValueError("the shallowpi policy needs an action feature")

    # shallowpi's side ----------------------------------------------------------------------------------------
    def resolved_camera_map(self) -> dict[str, str]:
        """Input camera -> model slot: `camera_map`, or each visual input feature to a slot of its name."""
        if self.camera_map:
            return dict(self.camera_map)
        return {k: k for k, f in (self.input_features or {}).items() if f.type is FeatureType.VISUAL}

    def model_config(self) -> PiConfig:
        """shallowpi's model config; fills `shallowpi` from the preset on first use (fresh models)."""
        if self.shallowpi is None:
            slots = tuple(dict.fromkeys(self.resolved_camera_map().values()))
            if not slots:
                raise ValueError("no camera slots: the dataset or env has no VISUAL input feature")
            base = dataclasses.replace(preset(self.preset), variant=self.variant, cameras=slots)
            if self.depth is not None:
                base = base.with_depth(self.depth)
            vision = base.vision
            if self.image_resolution is not None:
                vision = dataclasses.replace(vision, image_size=int(self.image_resolution[0]))
            self.shallowpi = {
                "vlm": {k: getattr(base.vlm, k) for k in _GEMMA_KEYS},
                "expert": {k: getattr(base.expert, k) for k in _GEMMA_KEYS},
                "vision": {k: getattr(vision, k) for k in _VISION_KEYS},
                "vocab_size": base.vocab_size,
                "layer_map": None,
                "cameras": list(slots),
            }
        size = int(self.shallowpi.get("vision", {}).get("image_size", 224))
        if self.image_resolution is None:
            self.image_resolution = (size, size)
        raw = {k: getattr(self, k) for k in _SCALARS}
        raw.update(
            type=PLUGIN_TYPE,
            variant=self.variant,
            shallowpi=self.shallowpi,
            image_resolution=list(self.image_resolution),
        )
        return config_from_lerobot(raw)
