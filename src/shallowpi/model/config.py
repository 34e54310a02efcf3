"""Model configuration: sizes of the three towers and the flow-matching head.

LeRobot's config.json has no size fields (sizes come from the variant strings), so sizes that differ from the
standard π0/π0.5 ones travel in a "shallowpi" object inside config.json (see checkpoint.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from shallowpi.cameras import DEFAULT_CAMERAS
from shallowpi.errors import UserError

Variant = Literal["pi0", "pi05"]
DType = Literal["float32", "bfloat16"]


@dataclass
class GemmaConfig:
    width: int = 2048
    depth: int = 18
    mlp_dim: int = 16384
    num_heads: int = 8
    num_kv_heads: int = 1
    head_dim: int = 256
    rms_eps: float = 1e-6
    rope_theta: float = 10000.0


@dataclass
class SiglipConfig:
    image_size: int = 224
    patch_size: int = 14
    width: int = 1152
    depth: int = 27
    mlp_dim: int = 4304
    num_heads: int = 16
    layer_norm_eps: float = 1e-6
    # Token merge factor m: each m x m block of neighbouring patch tokens is concatenated into one token
    # (pixel shuffle) before the projector, so the backbone sees num_patches / m² image tokens per camera.
    # Static: the token count is fixed by the config, which ONNX / TensorRT / CUDA graphs need.
    merge: int = 1

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """SigLIP's tokens per camera (its position embeddings)."""
        return self.grid**2

    @property
    def num_tokens(self) -> int:
        """Image tokens per camera that reach the backbone (after merging)."""
        return (self.grid // self.merge) ** 2

    @property
    def token_width(self) -> int:
        """Width of a merged token: the projector's input."""
        return self.width * self.merge**2


def gemma_2b() -> GemmaConfig:
    return GemmaConfig(width=2048, depth=18, mlp_dim=16384)


def gemma_300m() -> GemmaConfig:
    return GemmaConfig(width=1024, depth=18, mlp_dim=4096)


@dataclass
class PiConfig:
    variant: Variant = "pi05"
    vlm: GemmaConfig = field(default_factory=gemma_2b)
    expert: GemmaConfig = field(default_factory=gemma_300m)
    vision: SiglipConfig = field(default_factory=SiglipConfig)
    vocab_size: int = 257152
    cameras: tuple[str, ...] = DEFAULT_CAMERAS
    chunk_size: int = 50
    max_state_dim: int = 32
    max_action_dim: int = 32
    num_inference_steps: int = 10
    tokenizer_max_length: int = 200
    min_period: float = 4e-3  # sinusoidal time embedding periods
    max_period: float = 4.0
    # t ~ Beta(alpha, beta) * scale + offset; t = 1 is noise (openpi convention).
    time_beta_alpha: float = 1.5
    time_beta_beta: float = 1.0
    time_scale: float = 0.999
    time_offset: float = 0.001
    dtype: DType = "float32"
    # Teacher layer each layer of this model was copied from (students); None for a teacher.
    layer_map: list[int] | None = None
    # Backbone layers' teacher layers where they differ from the expert's `layer_map` (the authors' released
    # initialisation keeps the backbone's first layers and subsamples only the expert); None: `layer_map`.
    vlm_layer_map: list[int] | None = None
    # SigLIP layers' teacher layers for a student whose vision tower was subsampled; None: not subsampled.
    vision_layer_map: list[int] | None = None
    # The time grid a step-distilled student was trained for: t values from 1 (noise) to 0 (data),
    # num_inference_steps + 1 of them. None: uniform Euler over num_inference_steps (LeRobot's sampler).
    sampling_grid: list[float] | None = None
    # LeRobot config.json fields we do not model (features, normalisation mapping, optimizer presets, ...),
    # kept verbatim so that a LeRobot config survives load -> save.
    lerobot: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.vlm, dict):
            self.vlm = GemmaConfig(**self.vlm)
        if isinstance(self.expert, dict):
            self.expert = GemmaConfig(**self.expert)
        if isinstance(self.vision, dict):
            self.vision = SiglipConfig(**self.vision)
        self.cameras = tuple(self.cameras)
        self.validate()

    @property
    def depth(self) -> int:
        return self.vlm.depth

    @property
    def uses_adarms(self) -> bool:
        return self.variant == "pi05"

    def validate(self) -> None:
        if self.variant not in ("pi0", "pi05"):
            raise UserError(f"variant must be 'pi0' or 'pi05', got {self.variant!r}")
        if self.vlm.depth < 1 or self.expert.depth < 1:
            raise UserError(f"depth must be >= 1, got backbone {self.vlm.depth}, expert {self.expert.depth}")
        if self.vlm.depth != self.expert.depth:
            raise UserError(
                f"backbone depth {self.vlm.depth} != expert depth {self.expert.depth}: joint attention pairs "
                "backbone layer i with expert layer i, so both stacks need the same depth"
            )
        for name in ("num_heads", "num_kv_heads", "head_dim"):
            a, b = getattr(self.vlm, name), getattr(self.expert, name)
            if a != b:
                raise UserError(
                    f"{name} differs between backbone ({a}) and expert ({b}); joint attention needs equal"
                )
        if self.vlm.num_heads % self.vlm.num_kv_heads:
            raise UserError("num_heads must be a multiple of num_kv_heads")
        if self.vlm.head_dim % 2 or self.expert.width % 2:
            raise UserError("head_dim and expert width must be even (RoPE halves, sin/cos time embedding)")
        if self.vision.image_size % self.vision.patch_size:
            raise UserError(
                f"image_size {self.vision.image_size} is not a multiple of patch_size {self.vision.patch_size}"
            )
        if (
            isinstance(self.vision.merge, bool)
            or not isinstance(self.vision.merge, int)
            or self.vision.merge < 1
        ):
            raise UserError(f"image token merge must be an integer >= 1, got {self.vision.merge!r}")
        if self.vision.grid % self.vision.merge:
            raise UserError(
                f"image token merge {self.vision.merge} does not divide the {self.vision.grid}x"
                f"{self.vision.grid} patch grid ({self.vision.image_size} px / patch {self.vision.patch_size})"
            )
        if self.vision.depth < 1:
            raise UserError(f"vision depth must be >= 1, got {self.vision.depth}")
        if self.vision_layer_map is not None and len(self.vision_layer_map) != self.vision.depth:
            raise UserError(
                f"vision_layer_map has {len(self.vision_layer_map)} entries for vision depth {self.vision.depth}"
            )
        if not self.cameras:
            raise UserError("at least one camera slot is needed")
        if self.layer_map is not None and len(self.layer_map) != self.depth:
            raise UserError(f"layer_map has {len(self.layer_map)} entries for depth {self.depth}")
        if self.vlm_layer_map is not None and (
            self.layer_map is None or len(self.vlm_layer_map) != self.depth
        ):
            raise UserError(
                f"the backbone layer map (vlm_layer_map) needs a layer_map and {self.depth} entries, got {self.vlm_layer_map}"
            )
        if self.dtype not in ("float32", "bfloat16"):
            raise UserError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.num_inference_steps < 1:
            raise UserError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.sampling_grid is not None:
            self.sampling_grid = check_time_grid(self.sampling_grid)
            if len(self.sampling_grid) != self.num_inference_steps + 1:
                raise UserError(
                    f"sampling_grid {self.sampling_grid} has {len(self.sampling_grid) - 1} steps but "
                    f"num_inference_steps is {self.num_inference_steps}"
                )

    # Sampling time grid -----------------------------------------------------------------------------------
    def time_grid(self, num_steps: int | None = None) -> list[float]:
        """The t values of the Euler sampler, 1.0 first, 0.0 last (num_steps + 1 of them).

        None: the model's own time grid (its recorded `sampling_grid`, else uniform over
        num_inference_steps). An explicit step count that differs from the recorded one means plain uniform
        Euler with that many steps (the naive few-step baseline); the same count keeps the recorded grid.
        """
        if num_steps is None:
            num_steps = self.num_inference_steps
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise UserError(f"num_steps must be an integer >= 1, got {num_steps!r}")
        if self.sampling_grid is not None and num_steps == len(self.sampling_grid) - 1:
            return list(self.sampling_grid)
        return uniform_time_grid(num_steps)

    def with_sampling(self, grid: Sequence[float] | None) -> PiConfig:
        """Same config sampled with `grid` (None: back to uniform Euler over num_inference_steps)."""
        if grid is None:
            return dataclasses.replace(self, sampling_grid=None)
        grid = check_time_grid(grid)
        return dataclasses.replace(self, sampling_grid=grid, num_inference_steps=len(grid) - 1)

    # Sequence lengths ------------------------------------------------------------------------------------
    @property
    def prefix_len(self) -> int:
        return len(self.cameras) * self.vision.num_tokens + self.tokenizer_max_length

    @property
    def suffix_len(self) -> int:
        return self.chunk_size + (1 if self.variant == "pi0" else 0)

    def with_depth(
        self, depth: int, layer_map: list[int] | None = None, vlm_layer_map: list[int] | None = None
    ) -> PiConfig:
        """Same config with `depth` layers in both stacks."""
        return dataclasses.replace(
            self,
            vlm=dataclasses.replace(self.vlm, depth=depth),
            expert=dataclasses.replace(self.expert, depth=depth),
            layer_map=layer_map,
            vlm_layer_map=vlm_layer_map,
        )

    def with_prefix(
        self,
        *,
        merge: int | None = None,
        vision_depth: int | None = None,
        vision_layer_map: list[int] | None = None,
    ) -> PiConfig:
        """Same config with a compressed prefix: image tokens merged `merge` x `merge`, and / or a vision tower
        of `vision_depth` layers copied from the teacher's `vision_layer_map`."""
        vision = self.vision
        if merge is not None:
            vision = dataclasses.replace(vision, merge=merge)
        if vision_depth is not None:
            vision = dataclasses.replace(vision, depth=vision_depth)
        return dataclasses.replace(
            self,
            vision=vision,
            vision_layer_map=vision_layer_map if vision_layer_map is not None else self.vision_layer_map,
        )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["cameras"] = list(self.cameras)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PiConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"unknown PiConfig fields: {sorted(unknown)}")
        return cls(**d)


def uniform_time_grid(num_steps: int) -> list[float]:
    """LeRobot's / openpi's Euler times t_k = 1 + k·(−1/steps), then 0.0 (the same floats they compute)."""
    dt = -1.0 / num_steps
    return [1.0 + k * dt for k in range(num_steps)] + [0.0]


def euler_steps(grid: Sequence[float]) -> list[tuple[float, float]]:
    """[(t_k, dt_k)] of the Euler sampler along `grid`. On the uniform grid dt is exactly −1/steps, the float
    LeRobot and openpi step with (t_{k+1} − t_k can differ from it in the last bit)."""
    grid = [float(t) for t in grid]
    n = len(grid) - 1
    if grid == uniform_time_grid(n):
        return [(t, -1.0 / n) for t in grid[:-1]]
    return [(a, b - a) for a, b in zip(grid, grid[1:], strict=False)]


def check_time_grid(grid: Sequence[float], *, full: bool = True) -> list[float]:
    """A sampling time grid as floats: finite, strictly decreasing, from 1.0 to 0.0 (`full`), or any
    decreasing sub-interval of [0, 1] (`full=False`). Raises one ValueError that shows the grid."""
    try:
        values = [float(t) for t in grid]
    except (TypeError, ValueError) as e:
        raise ValueError(f"time grid must be a list of numbers, got {grid!r}") from e
    problem = None
    if len(values) < 2:
        problem = "it needs at least 2 values (one step)"
    elif not all(math.isfinite(t) for t in values):
        problem = "every value must be finite"
    elif any(b >= a for a, b in zip(values, values[1:], strict=False)):
        problem = "it must be strictly decreasing (t = 1 is noise, t = 0 is data)"
    elif full and (values[0] != 1.0 or values[-1] != 0.0):
        problem = "it must start at 1.0 and end at 0.0"
    elif not full and (values[0] > 1.0 or values[-1] < 0.0):
        problem = "it must lie within [0, 1]"
    if problem:
        raise ValueError(f"bad time grid {values}: {problem}")
    return values


# Presets ---------------------------------------------------------------------------------------------------


def pi0() -> PiConfig:
    """Full-size π0 exactly as LeRobot 0.4.4 builds it (gemma_2b + gemma_300m, SigLIP So400m/14 @224)."""
    return PiConfig(variant="pi0", tokenizer_max_length=48)


def pi05() -> PiConfig:
    """Full-size π0.5 exactly as LeRobot 0.4.4 builds it (adaRMS expert, 200-token prompt)."""
    return PiConfig(variant="pi05", tokenizer_max_length=200)


def tiny(variant: Variant = "pi05", depth: int = 4) -> PiConfig:
    """The architecture of ../shared/reference/pi0(5)_tiny (LeRobot's code with small sizes)."""
    return PiConfig(
        variant=variant,
        vlm=GemmaConfig(width=64, depth=depth, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16),
        expert=GemmaConfig(width=32, depth=depth, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=16),
        vision=SiglipConfig(image_size=56, patch_size=14, width=32, depth=2, mlp_dim=64, num_heads=4),
        vocab_size=1024,
        chunk_size=10,
        tokenizer_max_length=16,
    )


def mid(variant: Variant = "pi05", depth: int = 18) -> PiConfig:
    """The "mid" π0.5-shaped benchmark config (model-latency benchmark, CPU-sized)."""
    return PiConfig(
        variant=variant,
        vlm=GemmaConfig(width=512, depth=depth, mlp_dim=2048, num_heads=8, num_kv_heads=1, head_dim=64),
        expert=GemmaConfig(width=256, depth=depth, mlp_dim=1024, num_heads=8, num_kv_heads=1, head_dim=64),
        vision=SiglipConfig(image_size=224, patch_size=16, width=256, depth=6, mlp_dim=1024, num_heads=8),
        vocab_size=257152,
        chunk_size=50,
        tokenizer_max_length=48,
    )


def testbed(variant: Variant = "pi05", depth: int = 18) -> PiConfig:
    """The Meta-World test-bed policy: 18 layers in both stacks like the real models, sized to train on a
    2-core CPU: 64 px images from 2 cameras, 16 tokens each (patch 16). `variant` picks π0.5 (adaRMS expert,
    state as prompt text) or π0 (continuous state token in the action expert's suffix)."""
    return PiConfig(
        variant=variant,
        vlm=GemmaConfig(width=64, depth=depth, mlp_dim=256, num_heads=8, num_kv_heads=1, head_dim=16),
        expert=GemmaConfig(width=64, depth=depth, mlp_dim=256, num_heads=8, num_kv_heads=1, head_dim=16),
        vision=SiglipConfig(image_size=64, patch_size=16, width=64, depth=4, mlp_dim=256, num_heads=4),
        vocab_size=1024,  # the shipped test-bed tokenizer
        cameras=DEFAULT_CAMERAS[:2],
        chunk_size=10,
        # π0.5 writes the state into the prompt (7 dims: <= 36 tokens); π0 prompts hold the task text only
        tokenizer_max_length=64 if variant == "pi05" else 16,
    )


def testbed_fine(variant: Variant = "pi0", depth: int = 18) -> PiConfig:
    """The test bed with a 4x finer image grid: the same 64 px renders cut into 8-px patches, 64 tokens per
    camera, so that objects a few pixels wide (the puck, the peg) get tokens of their own and a grid exists to
    pool for prefix compression. The same collected demonstrations serve both presets."""
    cfg = testbed(variant, depth)
    return dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, patch_size=8))


PRESETS = {
    "pi0": pi0,
    "pi05": pi05,
    "tiny": tiny,
    "mid": mid,
    "testbed": testbed,
    "testbed_fine": testbed_fine,
}


def preset(name: str, **overrides) -> PiConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    cfg = PRESETS[name]()
    depth = overrides.pop("depth", None)
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    if depth is not None:
        cfg = cfg.with_depth(depth)
    return cfg
