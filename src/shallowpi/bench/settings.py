"""What one benchmark run measures (`BenchSettings`, its validation) and the names of its modes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from shallowpi.device import resolve_device
from shallowpi.errors import UserError

MODES = (
    "reference",
    "reference_nocompact",
    "engine",
    "engine_nocompact",
    "engine_unfolded",
    "compiled",
    "cuda_graph",
    "cuda_graph_unfolded",
    "compiled_cuda_graph",
)
# 2: settings.batch -> batch_size, settings.steps -> num_steps; 3: settings.backends, runs' backend / warmup_s
# (3 later gained fields only, which no reader of 3 misses: settings.image_merge / vision_depth, runs'
# image_merge / image_tokens / vision_depth / vision_layer_map)
SCHEMA = "shallowpi.bench/3"


@dataclass(slots=True)  # a misspelt field (say `steps` for `num_steps`) is an error, not a new attribute
class BenchSettings:
    preset: str | None = "mid"  # model preset (random weights) when no policies are given
    variant: str | None = None  # override the preset's variant (pi0 | pi05)
    depths: list[int] = field(default_factory=list)  # empty: the preset's depth
    # Prefix compression of the preset's students (every depth but the deepest when several are compared,
    # else the one model): image tokens merged m x m, a SigLIP tower of this many layers. None: the preset's.
    image_merge: int | None = None
    vision_depth: int | None = None
    policies: list[str] = field(default_factory=list)  # pretrained folders (e.g. teacher and student)
    device: str | None = None  # None: cuda if available, else cpu (`shallowpi.device`)
    dtype: str = "float32"
    batch_size: int = 1
    cameras: int | None = None  # valid camera slots (the rest are masked); None: all but one if > 1 slot
    lang_tokens: int | None = None  # valid prompt tokens; None: min(20, tokenizer_max_length)
    num_steps: int | None = None  # Euler steps; None: each model's config's
    chunk: int | None = None  # action chunk; None: the config's
    modes: list[str] = field(default_factory=lambda: ["reference", "engine"])  # the torch backend's
    backends: list[str] = field(default_factory=lambda: ["torch"])  # torch, onnxruntime: each in a process
    warmup: int = 3
    iters: int = 20
    threads: int | None = None
    seed: int = 0
    count_flops: bool = True  # cross-check the analytic FLOPs with torch's counter (one extra call each)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)

    def validate(self) -> None:
        if not self.policies and not self.preset:
            raise UserError("give --policy PATH or --preset NAME")
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise UserError(f"unknown mode {bad[0]!r}; choose from {', '.join(MODES)}")
        if not self.modes and "torch" in self.backends:
            raise UserError("no modes to run")
        if not self.backends or len(set(self.backends)) != len(self.backends):
            raise UserError(f"backends must be distinct and not empty, got {self.backends}")
        from shallowpi.infer.backends import resolve_backend

        for b in self.backends:
            resolve_backend(b, self.device)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device {self.device!r} asked for but CUDA is not available")
        if not self.device.startswith("cuda") and any("cuda_graph" in m for m in self.modes):
            raise UserError("cuda_graph modes need --device cuda")
        if self.dtype not in ("float32", "bfloat16"):
            raise UserError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.iters < 1 or self.warmup < 0 or self.batch_size < 1:
            raise UserError("iters and batch size must be >= 1 and warmup >= 0")
        if any(d < 1 for d in self.depths):
            raise UserError(f"depths must be >= 1, got {self.depths}")
        if self.policies and self.depths:
            raise UserError("depths apply to presets; pass several --policy folders to compare checkpoints")
        if self.image_merge is not None or self.vision_depth is not None:
            if self.policies:
                raise UserError(
                    "--image-merge / --vision-depth shape the students of --preset; a --policy folder has its "
                    "own prefix (its config.json)"
                )
            from shallowpi.bench.students import compress_prefix
            from shallowpi.model.config import preset

            compress_prefix(
                preset(self.preset), self.image_merge, self.vision_depth
            )  # refused here, not later
