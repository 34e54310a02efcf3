"""Student from teacher: keep every non-layer tensor, copy a subset of layers of BOTH stacks with one map.

The map says, for each student layer i, which teacher layer it was copied from. The same map applies to the
backbone and the action expert because joint attention pairs backbone layer i with expert layer i
(docs/method.md §2; the authors' released code remaps only the expert, which we consider a bug). The map is
stored in the student's config (`layer_map`, written to config.json's "shallowpi" object) and is relative to
the teacher it was made from.

A student can also take a compressed prefix (docs/method.md §8): its image tokens merged m x m before the
projector (`merge`, the projector initialised so a merged token projects to the mean of its group) and a
subset of the SigLIP tower's layers (`vision_layer_map`, subsampled like the Gemma stacks).
"""

from __future__ import annotations

import copy
import re

import numpy as np
import torch

from shallowpi.distill.prefix import check_merge, merged_projector_weight
from shallowpi.errors import UserError
from shallowpi.model import PiModel

_LAYER_KEY = re.compile(r"^(vlm|expert|vision\.encoder)\.layers\.(\d+)\.(.+)$")


# Error wording per stack: the Gemma stacks' ("student depth", "layers") and the SigLIP tower's.
_WORDS = {
    "": ("student depth", "the teacher's depth", "layer", "a teacher"),
    "vision": ("vision depth", "the teacher's vision depth", "vision layer", "a teacher vision tower"),
}


def default_layer_map(teacher_depth: int, depth: int, *, stack: str = "") -> list[int]:
    """round(linspace(0, L-1, n)) with numpy's round-half-to-even, as the authors' code.

    L18 -> L6 [0,3,7,10,14,17], L9 [0,2,4,6,8,11,13,15,17], L4 [0,6,11,17], L3 [0,8,17].
    `stack` "vision": the SigLIP tower's map (only the error's wording differs).
    """
    what, whose, _, _ = _WORDS[stack]
    if not 1 <= depth <= teacher_depth:
        raise UserError(f"{what} must be in [1, {teacher_depth}] ({whose}), got {depth}")
    return [int(x) for x in np.round(np.linspace(0, teacher_depth - 1, depth))]


def check_layer_map(layers: list[int], teacher_depth: int, *, stack: str = "") -> list[int]:
    """Validate an explicit layer list: integers, in range, strictly increasing (one clear error)."""
    _, _, layer, teacher = _WORDS[stack]
    if len(layers) == 0:
        raise UserError(f"{layer} list is empty; a student needs at least one {layer}")
    if any(not isinstance(i, (int, np.integer)) or isinstance(i, bool) for i in layers):
        raise UserError(f"{layer} list must contain integers, got {layers}")
    layers = [int(i) for i in layers]
    bad = [i for i in layers if not 0 <= i < teacher_depth]
    if bad:
        raise UserError(
            f"{layer}s {bad} are out of range for {teacher} of depth {teacher_depth} (0..{teacher_depth - 1})"
        )
    if any(b <= a for a, b in zip(layers, layers[1:], strict=False)):
        # Layers run in order; a repeated or reversed index is almost always a typo.
        raise UserError(f"{layer} list must be strictly increasing, got {layers}")
    return layers


def resolve_layer_map(
    teacher_depth: int, depth: int | None = None, layers: list[int] | None = None, *, stack: str = ""
) -> list[int]:
    if layers is not None:
        layers = check_layer_map(list(layers), teacher_depth, stack=stack)
        if depth is not None and depth != len(layers):
            what = _WORDS[stack][0].replace("student ", "")
            raise UserError(f"{what} {depth} does not match the {len(layers)} layers given ({layers})")
        return layers
    if depth is None:
        raise UserError("give a student depth or an explicit layer list")
    return default_layer_map(teacher_depth, depth, stack=stack)


def resolve_vision_layer_map(
    teacher_depth: int, depth: int | None = None, layers: list[int] | None = None
) -> list[int] | None:
    """The SigLIP layers' teacher layers, or None when the student keeps the whole tower (not subsampled)."""
    if depth is None and layers is None:
        return None
    vision_map = resolve_layer_map(teacher_depth, depth, layers, stack="vision")
    return None if vision_map == list(range(teacher_depth)) else vision_map


def student_state_dict(
    teacher: PiModel,
    layer_map: list[int],
    vlm_layer_map: list[int] | None = None,
    vision_layer_map: list[int] | None = None,
    merge: int | None = None,
) -> dict[str, torch.Tensor]:
    """Teacher tensors renamed for the student: layer i of each stack <- teacher layer layer_map[i]
    (the backbone's from `vlm_layer_map[i]`, SigLIP's from `vision_layer_map[i]` when given); with a
    `merge` above the teacher's, the projector weight for merged tokens (`merged_projector_weight`)."""
    src = teacher.state_dict()
    vision_map = vision_layer_map or list(range(teacher.config.vision.depth))
    maps = {"vlm": vlm_layer_map or layer_map, "expert": layer_map, "vision.encoder": vision_map}
    out: dict[str, torch.Tensor] = {}
    for name, t in src.items():
        m = _LAYER_KEY.match(name)
        if m is None:
            out[name] = t.detach().clone()
    for stack, stack_map in maps.items():
        for i, j in enumerate(stack_map):
            prefix = f"{stack}.layers.{j}."
            for name, t in src.items():
                if name.startswith(prefix):
                    out[f"{stack}.layers.{i}.{name[len(prefix) :]}"] = t.detach().clone()
    teacher_merge = teacher.config.vision.merge
    if merge is not None and merge != teacher_merge:
        out["projector.weight"] = merged_projector_weight(src["projector.weight"], teacher_merge, merge)
    return out


def make_student(
    teacher: PiModel,
    depth: int | None = None,
    layers: list[int] | None = None,
    vlm_layers: list[int] | None = None,
    *,
    merge: int | None = None,
    vision_depth: int | None = None,
    vision_layers: list[int] | None = None,
) -> PiModel:
    """A PiModel of `depth` layers (or exactly `layers`) whose tensors are copies of the teacher's.

    Vision tower, projector, embeddings, state/action/time projections and final norms are copied whole; the
    student's layer i of both stacks is the teacher's layer `layer_map[i]`. Dtypes and device follow the
    teacher's tensors. The result is independent of the teacher (no shared storage).

    `vlm_layers` gives the backbone its own teacher layers (a baseline: the authors' released code keeps the
    backbone's first layers and subsamples only the expert); by default both stacks share one map.

    Prefix compression: `merge` m (default: the teacher's, 1 for a real teacher) merges each m x m block of
    patch tokens into one; `vision_depth` (uniform subsampling) or `vision_layers` (explicit) keeps that
    many SigLIP layers, recorded as the config's `vision_layer_map` (relative to this teacher).
    """
    tc = teacher.config
    layer_map = resolve_layer_map(tc.depth, depth, layers)
    vlm_map = None
    if vlm_layers is not None:
        vlm_map = resolve_layer_map(tc.depth, len(layer_map), list(vlm_layers))
        vlm_map = None if vlm_map == layer_map else vlm_map
    merge = tc.vision.merge if merge is None else check_merge(merge, tc.vision)
    vision_map = resolve_vision_layer_map(tc.vision.depth, vision_depth, vision_layers)
    cfg = copy.deepcopy(tc).with_depth(len(layer_map), layer_map, vlm_map)
    cfg = cfg.with_prefix(  # validates the merge against the patch grid
        merge=merge, vision_depth=len(vision_map) if vision_map else tc.vision.depth
    )
    cfg.vision_layer_map = vision_map  # relative to this teacher; None: the whole tower
    with torch.device("meta"):
        student = PiModel(cfg)
    state = student_state_dict(teacher, layer_map, vlm_map, vision_map, merge)
    student.load_state_dict(state, strict=True, assign=True)
    student.config.dtype = teacher.config.dtype
    return student.train(teacher.training)


__all__ = [
    "check_layer_map",
    "default_layer_map",
    "make_student",
    "resolve_layer_map",
    "resolve_vision_layer_map",
    "student_state_dict",
]
