"""The random-weight models a preset benchmark times: the preset at each depth, its students' prefix
compressed (`BenchSettings.image_merge` / `vision_depth`) like `shallowpi distill --image-merge
--vision-layers` would shape them (latency and FLOPs do not depend on the weights)."""

from __future__ import annotations

from shallowpi.distill.student import resolve_vision_layer_map
from shallowpi.errors import UserError
from shallowpi.model.config import PiConfig


def compress_prefix(cfg: PiConfig, merge: int | None, vision_depth: int | None) -> PiConfig:
    """`cfg` with image tokens merged `merge` x `merge` and a SigLIP tower of `vision_depth` of its layers
    (None: as `cfg` has them); its `vision_layer_map` is the round(linspace) subsampling distillation uses.
    Raises one UserError for a merge that does not fit the patch grid or a tower deeper than `cfg`'s."""
    if merge is None and vision_depth is None:
        return cfg
    v = cfg.vision
    if merge is not None and (merge < 1 or v.grid % merge):
        raise UserError(
            f"--image-merge {merge} does not divide the {v.grid}x{v.grid} patch grid "
            f"({v.image_size} px / patch {v.patch_size})"
        )
    if vision_depth is not None and not 1 <= vision_depth <= v.depth:
        raise UserError(
            f"--vision-depth must be in [1, {v.depth}] (the preset's SigLIP layers), got {vision_depth}"
        )
    vision_map = resolve_vision_layer_map(v.depth, vision_depth) if vision_depth is not None else None
    return cfg.with_prefix(merge=merge, vision_depth=vision_depth, vision_layer_map=vision_map)


def model_label(preset: str, cfg: PiConfig) -> str:
    """pi05_d6, and for a compressed prefix its merge and tower: pi05_d6_m2_v14."""
    label = f"{preset}_d{cfg.depth}"
    if cfg.vision.merge != 1:
        label += f"_m{cfg.vision.merge}"
    if cfg.vision_layer_map is not None:
        label += f"_v{cfg.vision.depth}"
    return label


def student_depths(depths: list[int]) -> set[int]:
    """The depths whose prefix is compressed: all but the deepest (the teacher) when several are compared,
    the one model otherwise."""
    return set(depths) if len(set(depths)) == 1 else set(depths) - {max(depths)}
