"""Validation of an `Observation` against a model's config, with one clear error per problem, and batch-level
prefix compaction."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shallowpi.model.config import PiConfig
from shallowpi.observation import Observation


def pad_last(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Zero-pad the last dimension to `dim` (state/action padding to max dims)."""
    return x if x.shape[-1] == dim else F.pad(x, (0, dim - x.shape[-1]))


def _shape(x) -> tuple:
    return tuple(getattr(x, "shape", ())) if torch.is_tensor(x) else type(x).__name__


def check_inputs(cfg: PiConfig, obs: Observation, *, compact: bool = True) -> Observation:
    """Validate shapes and types; -> the observation the model runs on: state padded to max_state_dim (π0)
    or None (π0.5), and with `compact` only the camera slots and prompt columns some sample uses."""
    if not isinstance(obs, Observation):
        raise TypeError(
            f"expected a shallowpi.Observation, got {type(obs).__name__}; per-camera lists go through "
            "Observation.from_lists(images, img_masks, tokens, token_masks, state)"
        )
    cams, size = cfg.cameras, cfg.vision.image_size
    tokens, token_masks = obs.tokens, obs.token_masks
    if not torch.is_tensor(tokens) or tokens.ndim != 2:
        raise ValueError(f"tokens: expected a [B, L] tensor, got {_shape(tokens)}")
    b = tokens.shape[0]
    images, image_masks = obs.images, obs.image_masks
    if not torch.is_tensor(images) or images.ndim != 5:
        raise ValueError(f"images: expected a [B, n_slots, 3, H, W] tensor, got {_shape(images)}")
    if images.shape[1] != len(cams):
        raise ValueError(
            f"expected {len(cams)} camera images (slots {list(cams)}), got {images.shape[1]}; "
            "pass an all -1 image with mask False for a missing camera"
        )
    if tuple(images.shape) != (b, len(cams), 3, size, size):
        raise ValueError(
            f"images: expected [B={b}, {len(cams)}, 3, {size}, {size}] (slots {list(cams)}), "
            f"got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise ValueError(f"images: expected float images in [-1, 1], got dtype {images.dtype}")
    if not torch.is_tensor(image_masks) or tuple(image_masks.shape) != (b, len(cams)):
        raise ValueError(
            f"image_masks: expected [B={b}, {len(cams)}] (one per camera slot), got {_shape(image_masks)}"
        )
    if image_masks.dtype != torch.bool:
        raise ValueError(f"image_masks: expected dtype bool, got {image_masks.dtype}")
    if not torch.is_tensor(token_masks) or token_masks.shape != tokens.shape:
        raise ValueError(f"token_masks shape {_shape(token_masks)} != tokens shape {tuple(tokens.shape)}")
    if token_masks.dtype != torch.bool:
        raise ValueError(f"token_masks: expected dtype bool, got {token_masks.dtype}")
    if tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"tokens: expected integer ids, got dtype {tokens.dtype}")
    if b and (tokens.min() < 0 or tokens.max() >= cfg.vocab_size):
        raise ValueError(
            f"tokens: ids must be in [0, {cfg.vocab_size}), got [{int(tokens.min())}, {int(tokens.max())}]"
        )

    state = obs.state
    if cfg.variant == "pi0":
        if state is None:
            raise ValueError("state is required for pi0 (it enters the model as the state token)")
        if state.ndim != 2 or state.shape[0] != b:
            raise ValueError(f"state: expected [B={b}, <= {cfg.max_state_dim}], got {tuple(state.shape)}")
        if state.shape[1] > cfg.max_state_dim:
            raise ValueError(f"state dim {state.shape[1]} is above max_state_dim {cfg.max_state_dim}")
        state = pad_last(state.float(), cfg.max_state_dim)
    else:
        state = None  # π0.5 reads the state through the prompt (discretised), not as a token

    if compact:
        # A slot masked for every sample contributes only masked keys: skip its vision and prefix work.
        keep = image_masks.any(dim=0).nonzero().flatten().tolist() or [0]
        if len(keep) < len(cams):
            images, image_masks = images[:, keep], image_masks[:, keep]  # (B, kept, 3, H, W), (B, kept)
        # Language padding shared by the whole batch (right padding) is likewise dropped.
        valid_cols = token_masks.any(dim=0).nonzero()
        length = int(valid_cols.max()) + 1 if len(valid_cols) else 1
        tokens, token_masks = tokens[:, :length], token_masks[:, :length]
    return Observation(images, image_masks, tokens, token_masks, state)
