"""Tensor transforms shared by training, evaluation and serving.

- normalise / unnormalise state and actions (LeRobot's MEAN_STD and QUANTILES formulas, or IDENTITY; the
  constants and arithmetic are `processor_spec`'s, which the ONNX runner shares);
- resize-with-pad to the model resolution and [0, 1] -> [-1, 1];
- openpi-style training augmentation, driven only by the `torch.Generator` passed in (deterministic);
- zero-padding of state/action vectors to the model's max dims.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from shallowpi.data import processor_spec as spec
from shallowpi.data.processor_spec import EPS, NORM_MODES, NormMode
from shallowpi.errors import UserError

__all__ = [
    "EPS",
    "NORM_MODES",
    "NormMode",
    "augment_image",
    "normalize",
    "pad_vector",
    "resize_with_pad",
    "to_float_image",
    "to_signed",
    "unnormalize",
]

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}


def _terms(stats: Mapping[str, object], mode: str, like: torch.Tensor) -> dict[str, torch.Tensor]:
    """`processor_spec.norm_terms` in x's dtype (bf16: computed in fp32, then cast) on x's device."""
    terms = spec.norm_terms(
        {k: np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in stats.items()},
        mode,
        _NUMPY_DTYPES.get(like.dtype, np.float32),
    )
    return {k: torch.as_tensor(v, device=like.device).to(like.dtype) for k, v in terms.items()}


def normalize(x: torch.Tensor, stats: Mapping[str, object], mode: NormMode) -> torch.Tensor:
    """x [..., D] -> normalised [..., D]. MEAN_STD: (x-mean)/(std+eps); QUANTILES: to [-1, 1] over [q01, q99].
    The constants and the arithmetic are `processor_spec`'s (the ONNX runner's too)."""
    return spec.normalize(x, _terms(stats, mode, x), mode)


def unnormalize(x: torch.Tensor, stats: Mapping[str, object], mode: NormMode) -> torch.Tensor:
    """Inverse of `normalize`."""
    return spec.unnormalize(x, _terms(stats, mode, x), mode)


def pad_vector(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Zero-pad the last dim of x [..., D] to [..., dim]."""
    d = x.shape[-1]
    if d > dim:
        raise UserError(f"vector of dim {d} does not fit the model's max dim {dim}")
    return F.pad(x, (0, dim - d))


def to_float_image(img: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] in [0, 255] or float in [0, 1] -> float32 in [0, 1]."""
    if img.dtype == torch.uint8:
        return img.float() / 255.0
    return img.float()


def resize_with_pad(img: torch.Tensor, size: int) -> torch.Tensor:
    """float [..., 3, H, W] in [0, 1] -> [..., 3, size, size]: keep aspect ratio, pad black (0) on both sides.

    Pads with 0 in [0, 1] space (= -1 after scaling), as openpi and LeRobot after 0.4.4 do (0.4.4 padded
    a [0, 1] image with -1, giving -3 borders for non-square inputs).
    """
    h, w = img.shape[-2:]
    if (h, w) == (size, size):
        return img
    rh, rw, top, left = spec.resize_geometry(h, w, size)
    lead = img.shape[:-3]
    x = img.reshape(-1, *img.shape[-3:])  # [N, 3, H, W]
    x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False).clamp(0, 1)
    x = F.pad(x, (left, size - rw - left, top, size - rh - top), value=0.0)  # [N, 3, size, size]
    return x.reshape(*lead, 3, size, size)


def to_signed(img: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the SigLIP input range."""
    return img * 2 - 1


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def _gray(img: torch.Tensor) -> torch.Tensor:
    r, g, b = img[0], img[1], img[2]
    return (0.299 * r + 0.587 * g + 0.114 * b)[None]  # [1, H, W]


def augment_image(
    img: torch.Tensor, *, wrist: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """openpi's training augmentation on float [3, H, W] in [0, 1].

    Non-wrist cameras: random 95% crop resized back, then a rotation of up to +-5 degrees (a wrist camera
    moves with the gripper, so geometry changes would corrupt what it sees). All cameras: brightness
    0.7-1.3, contrast 0.6-1.4, saturation 0.5-1.5. Every random draw comes from `generator`.
    """
    _, h, w = img.shape
    if not wrist:
        ch, cw = int(h * 0.95), int(w * 0.95)
        top = int(torch.randint(0, h - ch + 1, (), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (), generator=generator))
        img = F.interpolate(
            img[None, :, top : top + ch, left : left + cw], size=(h, w), mode="bilinear", align_corners=False
        )[0]
        angle = math.radians(_uniform(-5.0, 5.0, generator))
        cos, sin = math.cos(angle), math.sin(angle)
        theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=img.dtype)[None]  # [1, 2, 3]
        grid = F.affine_grid(theta, [1, 3, h, w], align_corners=False)  # [1, H, W, 2]
        img = F.grid_sample(img[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    img = img * _uniform(0.7, 1.3, generator)  # brightness
    mean = _gray(img).mean()
    img = (img - mean) * _uniform(0.6, 1.4, generator) + mean  # contrast
    gray = _gray(img)
    img = (img - gray) * _uniform(0.5, 1.5, generator) + gray  # saturation
    return img.clamp(0, 1)
