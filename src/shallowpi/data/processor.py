"""Raw observation -> model inputs, and model actions -> robot actions. One code path for training,
evaluation and serving, so a policy sees the same inputs everywhere.

Input sample (what `LeRobotDataset` returns; the server/eval build the same from a robot observation):
    {"images": {camera_key: uint8 [3,H,W] | uint8 [H,W,3] | float [0,1]},  torch or numpy
     "state": [S], "task": str, optional "actions": [chunk, A], "action_is_pad": bool [chunk]}
One example (`Preprocessor.__call__`):
    {"images": float [n_slots, 3, size, size] in [-1, 1], "image_masks": bool [n_slots],
     "tokens": long [L], "token_masks": bool [L], "state": float [max_state_dim] (normalised, zero-padded),
     "actions": float [chunk, max_action_dim] (normalised, zero-padded; only if the sample has actions),
     "action_is_pad": bool [chunk]}
`collate` stacks examples along a new batch dim into the model's input, a `shallowpi.Observation`;
`collate_actions` stacks their action chunks (training).

The rules themselves (settings, prompt building and fitting, state bins, normalisation constants and
arithmetic, camera routing, sample checks) are `processor_spec`'s, written once without torch and shared
with the ONNX runner's numpy processor; this module adds torch tensors and augmentation (saving and reading them: `processor_files`).
"""

from __future__ import annotations

import numpy as np
import torch

from shallowpi.data import processor_spec as spec
from shallowpi.data import transforms
from shallowpi.data.processor_spec import (  # the torch-free specification; named here for torch callers
    ProcessorConfig,
    ProcessorError,
    PromptTooLongError,
    Variant,
)
from shallowpi.data.stats import Stats
from shallowpi.data.tokenizer import Tokenizer
from shallowpi.errors import UserError
from shallowpi.observation import Observation

__all__ = [
    "Postprocessor",
    "Preprocessor",
    "ProcessorConfig",
    "ProcessorError",
    "PromptTooLongError",
    "Variant",
    "collate",
    "collate_actions",
]


def _stats_tensors(stats: Stats, key: str) -> dict[str, torch.Tensor]:
    return {
        k: torch.as_tensor(np.asarray(v, dtype=np.float32)).reshape(-1) for k, v in stats.get(key, {}).items()
    }


def _check_stats(stats: dict[str, torch.Tensor], key: str, mode: str, dim: int) -> None:
    spec.check_stats({k: v.numpy() for k, v in stats.items()}, key, mode, dim)


def _infer_dim(stats: dict[str, torch.Tensor], given: int | None, key: str) -> int:
    return spec.feature_dim({k: v.numpy() for k, v in stats.items()}, given, key)


def image_to_chw(img, name: str) -> torch.Tensor:
    """Any camera frame -> float [3, H, W] in [0, 1]. Accepts torch/numpy, uint8/float, CHW/HWC."""
    x = torch.from_numpy(np.ascontiguousarray(img)) if isinstance(img, np.ndarray) else torch.as_tensor(img)
    if spec.image_layout(tuple(x.shape), name):
        x = x.permute(2, 0, 1)  # HWC -> CHW
    if x.dtype not in (torch.uint8, torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise ProcessorError(f"camera {name!r}: expected uint8 or float pixels, got {x.dtype}")
    return transforms.to_float_image(x)


def _vector(x, name: str, dim: int) -> torch.Tensor:
    v = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x).float()
    if v.shape[-1] != dim:
        raise ProcessorError(f"{name} has dim {v.shape[-1]}, expected {dim}")
    return v


def _state(x, dim: int) -> torch.Tensor:
    v = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x).float()
    spec.check_state(tuple(v.shape), dim)
    return v


class Preprocessor:
    def __init__(self, config: ProcessorConfig, stats: Stats, tokenizer: Tokenizer):
        self.config, self.tokenizer = config, tokenizer
        self.raw_stats = stats
        self.state_stats = _stats_tensors(stats, config.state_key)
        self.action_stats = _stats_tensors(stats, config.action_key)
        self.state_dim = _infer_dim(self.state_stats, config.state_dim, config.state_key)
        self.action_dim = _infer_dim(self.action_stats, config.action_dim, config.action_key)
        _check_stats(self.state_stats, config.state_key, config.state_norm, self.state_dim)
        _check_stats(self.action_stats, config.action_key, config.action_norm, self.action_dim)
        if self.state_dim > config.max_state_dim or self.action_dim > config.max_action_dim:
            raise UserError(
                f"state/action dims {self.state_dim}/{self.action_dim} exceed max "
                f"{config.max_state_dim}/{config.max_action_dim}"
            )
        self.slot_source = {slot: src for src, slot in config.camera_map.items()}  # slot -> source camera

    def _images(
        self, images: dict, train: bool, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        out, masks = [], []
        for slot, src in zip(c.cameras, spec.camera_sources(c, images, c.cameras), strict=True):
            if src is None:  # no camera for this slot: image -1 everywhere, masked out of attention
                out.append(torch.full((3, c.image_size, c.image_size), -1.0))
                masks.append(False)
                continue
            img = transforms.resize_with_pad(
                image_to_chw(images[src], src), c.image_size
            )  # [3, S, S] in [0, 1]
            if train:
                wrist = src in c.wrist_cameras or slot in c.wrist_cameras
                img = transforms.augment_image(img, wrist=wrist, generator=generator)
            out.append(transforms.to_signed(img))
            masks.append(True)
        return torch.stack(out), torch.tensor(masks)  # [n_slots, 3, S, S], [n_slots]

    def __call__(
        self, sample: dict, *, train: bool = False, generator: torch.Generator | None = None
    ) -> dict:
        c = self.config
        spec.check_sample(sample)
        images, image_masks = self._images(sample["images"], train, generator)
        state = transforms.normalize(_state(sample["state"], self.state_dim), self.state_stats, c.state_norm)
        padded_state = transforms.pad_vector(state, c.max_state_dim)  # [max_state_dim]
        tokens, token_masks = self.prompt_tokens(sample["task"], state)  # [L], [L]
        out = {
            "images": images,
            "image_masks": image_masks,
            "tokens": tokens,
            "token_masks": token_masks,
            "state": padded_state,
        }
        if sample.get("actions") is not None:
            actions = _vector(sample["actions"], "actions", self.action_dim)
            if actions.ndim != 2 or actions.shape[0] != c.chunk_size:
                raise UserError(
                    f"actions must be [chunk_size={c.chunk_size}, {self.action_dim}], "
                    f"got {tuple(actions.shape)}"
                )
            actions = transforms.normalize(actions, self.action_stats, c.action_norm)
            out["actions"] = transforms.pad_vector(actions, c.max_action_dim)  # [chunk, max_action_dim]
            pad = sample.get("action_is_pad")
            out["action_is_pad"] = (
                torch.zeros(c.chunk_size, dtype=torch.bool)
                if pad is None
                else torch.as_tensor(np.asarray(pad), dtype=torch.bool).reshape(c.chunk_size)
            )
        return out

    @property
    def max_task_chars(self) -> int:
        """Longest task text that can fit the prompt (`processor_spec.max_task_chars`)."""
        return spec.max_task_chars(self.config, self.tokenizer.max_piece_chars)

    def check_task(self, task: str) -> None:
        """A task too long to ever fit the prompt is refused without tokenising it (unless truncating)."""
        spec.check_task(task, self.config, self.tokenizer.max_piece_chars)

    def check_prompt(self, task: str) -> None:
        """PromptTooLongError now if `task` cannot fit (unless truncating), with a state of 3-digit bins: a
        start-up check over a dataset's tasks (the state in a sample's prompt is rarely longer)."""
        self.prompt_tokens(task, np.full(self.state_dim, 0.99, np.float32))  # [S] normalised: bin 254

    def prompt_tokens(self, task: str, state) -> tuple[torch.Tensor, torch.Tensor]:
        """The π0 / π0.5 prompt as (ids [L], mask [L]); `state` is the normalised, unpadded state [S] π0.5
        writes into it. Built, fitted (refused, or cut with `truncate_prompt`) and padded by
        `processor_spec.prompt_ids`."""
        tokens, mask = spec.prompt_ids(task, state, self.config, self.tokenizer)
        return torch.from_numpy(tokens), torch.from_numpy(mask)


def collate(examples: list[dict]) -> Observation:
    """Stack examples (`Preprocessor.__call__`) into the model's input: images [B, n_slots, 3, H, W],
    image_masks [B, n_slots], tokens / token_masks [B, L], state [B, max_state_dim] (π0.5 ignores it)."""

    def stack(key: str) -> torch.Tensor:
        return torch.stack([e[key] for e in examples])

    return Observation(
        stack("images"), stack("image_masks"), stack("tokens"), stack("token_masks"), stack("state")
    )


def collate_actions(examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack training examples' targets: actions [B, chunk, max_action_dim], action_is_pad [B, chunk]."""
    return torch.stack([e["actions"] for e in examples]), torch.stack([e["action_is_pad"] for e in examples])


class Postprocessor:
    """Normalised, padded model actions [..., chunk, max_action_dim] -> robot actions [..., chunk, action_dim]."""

    def __init__(self, config: ProcessorConfig, stats: Stats):
        self.config = config
        self.action_stats = _stats_tensors(stats, config.action_key)
        self.action_dim = _infer_dim(self.action_stats, config.action_dim, config.action_key)
        _check_stats(self.action_stats, config.action_key, config.action_norm, self.action_dim)

    def __call__(self, actions):
        is_numpy = isinstance(actions, np.ndarray)
        x = torch.from_numpy(actions) if is_numpy else actions
        x = transforms.unnormalize(
            x[..., : self.action_dim].float(), self.action_stats, self.config.action_norm
        )
        return x.numpy() if is_numpy else x

    def normalize(self, actions: torch.Tensor) -> torch.Tensor:
        """Robot actions [..., action_dim] -> the model's normalised space (the inverse of `__call__`, unpadded):
        real-time chunking guides toward a previous chunk in that space."""
        return transforms.normalize(actions.float(), self.action_stats, self.config.action_norm)
