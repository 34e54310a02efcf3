"""The random-weight models a preset benchmark times: the preset at each depth, its students' prefix
compressed (`BenchSettings.image_merge` / `vision_depth`) like `shallowpi distill --image-merge
--vision-layers` would shape them (latency and FLOPs do not depend on the weights)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from shallowpi.distill.student import resolve_vision_layer_map
from shallowpi.errors import UserError
from shallowpi.model.config import PiConfig, preset
from shallowpi.model.pi import PiModel


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


def at_preset(cfg: PiConfig, teacher: PiConfig, preset_name: str) -> PiConfig:
    """`cfg` (a student of `teacher`, or the teacher itself) carried to another preset's shapes: the same
    depth, image merge and denoising steps, and the same fraction of the teacher's SigLIP layers (rounded, at
    least 1). What a test-bed student's compression costs at full size (`shallowpi.infer.flops`)."""
    big = preset(preset_name, depth=cfg.depth)
    tower = None
    if cfg.vision.depth != teacher.vision.depth:
        tower = max(1, round(big.vision.depth * cfg.vision.depth / teacher.vision.depth))
    big = compress_prefix(big, cfg.vision.merge if cfg.vision.merge != 1 else None, tower)
    return dataclasses.replace(big, num_inference_steps=cfg.num_inference_steps)


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


def shared_random_models(configs: list[tuple[str, PiConfig]], seed: int = 0) -> list[tuple[str, PiModel]]:
    """[(label, config)] -> [(label, random-weight PiModel)], each model sharing every submodule an earlier
    one has with the same tensor shapes (a student's first layers are the teacher's layers 0..depth-1, its
    tower the teacher's first layers, its backbone embedding the teacher's): full-size teacher and students
    fit in memory together. Only latency and FLOPs are measured, and neither depends on the weights.
    Weights not shared are drawn as `random_model` draws them (built on the meta device: seconds)."""
    from shallowpi.export.onnx_export import init_random_

    gen = torch.Generator().manual_seed(seed)
    built: list[tuple[str, PiModel]] = []
    for label, cfg in configs:
        with torch.device("meta"):
            model = PiModel(cfg)
        for _, donor in built:
            _share(model, donor)
        with torch.no_grad():
            for name, module in model.named_modules():
                for pname, p in list(module._parameters.items()):
                    if p is not None and p.is_meta:  # nothing to share: its own random tensor
                        fresh = nn.Parameter(torch.empty_like(p, device="cpu"), requires_grad=p.requires_grad)
                        init_random_(f"{name}.{pname}" if name else pname, fresh, gen)
                        module._parameters[pname] = fresh
        built.append((label, model.eval()))
    return built


def _share(module: nn.Module, donor: nn.Module) -> None:
    """Replace each child of `module` (still on the meta device) by `donor`'s child of the same name and the
    same parameter shapes and dtypes; recurse where they differ (a ModuleList of other length)."""
    for name, child in list(module.named_children()):
        other = getattr(donor, name, None)
        if not isinstance(other, nn.Module) or type(other) is not type(child):
            continue
        if _signature(child) == _signature(other):
            setattr(module, name, other)
        else:
            _share(child, other)


def _signature(module: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(n, tuple(p.shape), p.dtype) for n, p in module.named_parameters()]
