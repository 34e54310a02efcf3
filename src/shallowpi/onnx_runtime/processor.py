"""The exported policy's processor in numpy (no torch): raw sample -> exported graph inputs, and back.

Every rule comes from `shallowpi.data.processor_spec`, the torch-free specification the torch processor
(`shallowpi.data.processor`) calls too: the settings (`ProcessorConfig`, read from the manifest), camera
routing, sample checks, normalisation constants and arithmetic, the π0 / π0.5 prompt with the 256-bin state,
fitting it to the prompt length (refused, or cut with `truncate_prompt`), the tokenizer. What is numpy's own
here is the pixel work: resize-with-pad (torch's bilinear, align_corners=False, re-implemented and held
equal by tests) and [0, 1] -> [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shallowpi.data import processor_spec as spec
from shallowpi.data.processor_spec import ProcessorConfig, ProcessorError, PromptTooLongError

__all__ = ["NumpyProcessor", "ProcessorError", "PromptTooLongError", "image_to_chw", "resize_with_pad"]


# images ------------------------------------------------------------------------------------------------------


def image_to_chw(img, name: str) -> np.ndarray:
    """uint8 / float image, [3,H,W] or [H,W,3] -> float32 [3, H, W] in [0, 1]."""
    x = np.asarray(img)
    if spec.image_layout(x.shape, name):
        x = x.transpose(2, 0, 1)  # HWC -> CHW
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if x.dtype.kind != "f":
        raise ProcessorError(f"camera {name!r}: expected uint8 or float pixels, got {x.dtype}")
    return x.astype(np.float32)


def _bilinear_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of torch's bilinear interpolation (align_corners=False) along one axis."""
    scale = np.float32(n_in / n_out)
    src = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0)
    i0 = src.astype(np.int64)  # floor: src >= 0
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(np.float32)
    return i0, i1, w1


def resize_with_pad(img: np.ndarray, size: int) -> np.ndarray:
    """float [3, H, W] in [0, 1] -> [3, size, size]: keep the aspect ratio, pad with 0 (black) on both sides."""
    _, h, w = img.shape
    if (h, w) == (size, size):
        return img
    rh, rw, top, left = spec.resize_geometry(h, w, size)
    y0, y1, wy = _bilinear_axis(h, rh)
    x0, x1, wx = _bilinear_axis(w, rw)
    rows = img[:, y0] * (1 - wy)[None, :, None] + img[:, y1] * wy[None, :, None]  # (3, rh, W)
    out = rows[:, :, x0] * (1 - wx)[None, None, :] + rows[:, :, x1] * wx[None, None, :]  # (3, rh, rw)
    out = np.clip(out, 0.0, 1.0)
    padded = np.zeros((3, size, size), dtype=np.float32)
    padded[:, top : top + rh, left : left + rw] = out
    return padded


# the processor -----------------------------------------------------------------------------------------------


class NumpyProcessor:
    """One raw sample {"images": {camera: image}, "state": (S,), "task": str} -> one example of graph inputs.

    `config`: the policy's ProcessorConfig with real dims and `tokenizer_max_length` = the exported prompt
    length; `normalization`: the manifest's {"state": {"mode", stats...}, "action": {...}}; `slots`: the
    model slots the prefix graph takes, in order (the export may drop slots no camera feeds).
    """

    def __init__(
        self,
        config: ProcessorConfig,
        normalization: dict,
        tokenizer_file: str | Path,
        slots: list[str],
        *,
        truncate_prompt: bool | None = None,  # None: the exported processor's choice
    ) -> None:
        self.config = config
        if truncate_prompt is not None:
            config.truncate_prompt = truncate_prompt
        self.variant = config.variant
        self.slots = list(slots)
        if config.state_dim is None or config.action_dim is None:
            raise ProcessorError("the manifest's processor lacks state_dim / action_dim")
        self.state_dim, self.action_dim = config.state_dim, config.action_dim
        self.state_mode, self.action_mode = normalization["state"]["mode"], normalization["action"]["mode"]
        for which, key, dim in (
            ("state", config.state_key, self.state_dim),
            ("action", config.action_key, self.action_dim),
        ):
            stats = normalization[which]
            if stats["mode"] != getattr(config, f"{which}_norm"):
                raise ProcessorError(
                    f"the manifest normalises the {which} with {stats['mode']}, its processor with "
                    f"{getattr(config, f'{which}_norm')}"
                )
            spec.check_stats(stats, key, stats["mode"], dim)
        self.state_terms = spec.norm_terms(normalization["state"], self.state_mode)
        self.action_terms = spec.norm_terms(normalization["action"], self.action_mode)
        self.camera_map: dict[str, str] = dict(config.camera_map)  # source camera -> model slot
        self.slot_source = {slot: src for src, slot in self.camera_map.items()}
        self.tokenizer = spec.SentencePieceTokenizer(tokenizer_file)

    @classmethod
    def from_manifest(cls, manifest, *, truncate_prompt: bool | None = None) -> NumpyProcessor:
        proc, norm = manifest.processor, manifest.normalization
        if proc is None or norm is None:
            raise ProcessorError(
                f"{manifest.root} was exported without a processor (model only): feed model inputs to "
                "OnnxRunner.sample() instead"
            )
        fields = {k: v for k, v in proc.items() if k != "tokenizer_file"}
        config = ProcessorConfig.from_dict(fields)
        prompt_length = int(manifest.model["prompt_length"])
        if config.tokenizer_max_length != prompt_length:
            raise ProcessorError(
                f"{manifest.root}: the processor's prompt length {config.tokenizer_max_length} is not the "
                f"graphs' {prompt_length}"
            )
        return cls(
            config,
            norm,
            manifest.root / proc["tokenizer_file"],
            manifest.cameras["exported"],
            truncate_prompt=truncate_prompt,
        )

    @property
    def max_task_chars(self) -> int:
        """Longest task text that can fit the prompt (`processor_spec.max_task_chars`)."""
        return spec.max_task_chars(self.config, self.tokenizer.max_piece_chars)

    def check_task(self, task: str) -> None:
        """A task too long to ever fit the prompt is refused without tokenising it (unless truncating)."""
        spec.check_task(task, self.config, self.tokenizer.max_piece_chars)

    def __call__(self, sample: dict) -> dict[str, np.ndarray]:
        c, size = self.config, self.config.image_size
        spec.check_sample(sample)
        out, masks = [], []
        for src in spec.camera_sources(c, sample["images"], self.slots):
            if src is None:  # exported slot that no camera feeds: -1 image, masked
                out.append(np.full((3, size, size), -1.0, dtype=np.float32))
                masks.append(False)
                continue
            out.append(resize_with_pad(image_to_chw(sample["images"][src], src), size) * 2 - 1)  # [-1, 1]
            masks.append(True)
        state = np.asarray(sample["state"], dtype=np.float32)
        spec.check_state(state.shape, self.state_dim)
        state = spec.normalize(state, self.state_terms, self.state_mode)  # [S]
        padded = np.zeros(c.max_state_dim, dtype=np.float32)
        padded[: self.state_dim] = state
        tokens, token_masks = spec.prompt_ids(sample["task"], state, c, self.tokenizer)
        return {
            "images": np.stack(out),  # [n_exported, 3, S, S]
            "image_masks": np.asarray(masks, dtype=bool),  # [n_exported]
            "tokens": tokens,  # [L]
            "token_masks": token_masks,  # [L]
            "state": padded,  # [max_state_dim] (π0's state token; π0.5 reads it from the prompt)
        }

    def postprocess(self, actions: np.ndarray) -> np.ndarray:
        """Normalised [..., chunk, max_action_dim] -> robot actions [..., chunk, action_dim]."""
        x = actions[..., : self.action_dim].astype(np.float32)
        return spec.unnormalize(x, self.action_terms, self.action_mode)
