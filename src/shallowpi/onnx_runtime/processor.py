"""numpy twin of `shallowpi.data.processor` for inference (no torch): raw sample -> exported graph inputs.

Same steps and formulas as the torch processor (tests hold the two equal on the same samples):
camera map, resize-with-pad (bilinear, align_corners=False, black borders), [0, 1] -> [-1, 1], MEAN_STD /
QUANTILES normalisation (LeRobot's eps), the π0 prompt or the π0.5 prompt with the 256-bin state,
SentencePiece tokenisation with BOS, right padding and truncation; and the inverse for actions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import sentencepiece as spm

from shallowpi.errors import MissingFileError, UserError

EPS = 1e-8  # LeRobot's normalisation eps (shallowpi.data.transforms.EPS)
STATE_BINS = 256


class ProcessorError(UserError):
    """A sample the exported policy cannot take; the message names the key."""


# images ------------------------------------------------------------------------------------------------------


def image_to_chw(img, name: str) -> np.ndarray:
    """uint8 / float image, [3,H,W] or [H,W,3] -> float32 [3, H, W] in [0, 1]."""
    x = np.asarray(img)
    if x.ndim != 3 or 3 not in (x.shape[0], x.shape[-1]):
        raise ProcessorError(
            f"camera {name!r}: expected an RGB image [3,H,W] or [H,W,3], got shape {x.shape}"
        )
    if x.shape[0] != 3:
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
    scale = size / max(h, w)
    rh, rw = max(1, int(h * scale)), max(1, int(w * scale))
    y0, y1, wy = _bilinear_axis(h, rh)
    x0, x1, wx = _bilinear_axis(w, rw)
    top = img[:, y0] * (1 - wy)[None, :, None] + img[:, y1] * wy[None, :, None]  # (3, rh, W)
    out = top[:, :, x0] * (1 - wx)[None, None, :] + top[:, :, x1] * wx[None, None, :]  # (3, rh, rw)
    out = np.clip(out, 0.0, 1.0)
    padded = np.zeros((3, size, size), dtype=np.float32)
    t, left = (size - rh) // 2, (size - rw) // 2
    padded[:, t : t + rh, left : left + rw] = out
    return padded


# state / actions ---------------------------------------------------------------------------------------------


def _stat(stats: dict, name: str) -> np.ndarray:
    if name not in stats:
        raise ProcessorError(f"normalisation needs stat {name!r}, which the manifest lacks")
    return np.asarray(stats[name], dtype=np.float32).reshape(-1)


def _denom(stats: dict) -> np.ndarray:
    d = _stat(stats, "q99") - _stat(stats, "q01")
    return np.where(d == 0, np.float32(EPS), d).astype(np.float32)


def normalize(x: np.ndarray, stats: dict) -> np.ndarray:
    mode = stats["mode"]
    if mode == "IDENTITY":
        return x
    if mode == "MEAN_STD":
        return (x - _stat(stats, "mean")) / (_stat(stats, "std") + np.float32(EPS))
    if mode == "QUANTILES":
        return 2 * (x - _stat(stats, "q01")) / _denom(stats) - 1
    raise ProcessorError(f"unknown normalisation mode {mode!r}")


def unnormalize(x: np.ndarray, stats: dict) -> np.ndarray:
    mode = stats["mode"]
    if mode == "IDENTITY":
        return x
    if mode == "MEAN_STD":
        return x * (_stat(stats, "std") + np.float32(EPS)) + _stat(stats, "mean")
    if mode == "QUANTILES":
        return (x + 1) * _denom(stats) / 2 + _stat(stats, "q01")
    raise ProcessorError(f"unknown normalisation mode {mode!r}")


# prompt ------------------------------------------------------------------------------------------------------


def clean_task(task: str) -> str:
    return task.strip().replace("_", " ").replace("\n", " ")


def discretize_state(state: np.ndarray, bins: int = STATE_BINS) -> np.ndarray:
    edges = np.linspace(-1, 1, bins + 1)[:-1]
    return np.digitize(np.asarray(state).astype(np.float64), bins=edges) - 1


def prompt(variant: str, task: str, normalized_state: np.ndarray) -> str:
    if variant == "pi0":
        return clean_task(task) + "\n"
    state_str = " ".join(str(int(b)) for b in discretize_state(normalized_state))
    return f"Task: {clean_task(task)}, State: {state_str};\nAction: "


class SentencePieceTokenizer:
    """BOS + ids, truncated to `max_length`, right-padded with the pad id (PaliGemma's special ids)."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"tokenizer model not found: {path}")
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(path))
        except (RuntimeError, OSError) as e:
            raise ProcessorError(f"not a SentencePiece model: {path}: {e}") from e
        self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else 0

    def tokenize(self, text: str, max_length: int) -> tuple[np.ndarray, np.ndarray]:
        ids = self.sp.encode(text, add_bos=True)[:max_length]
        tokens = np.full(max_length, self.pad_id, dtype=np.int64)  # [L]
        tokens[: len(ids)] = ids
        return tokens, np.arange(max_length) < len(ids)  # [L], [L] bool


# the processor -----------------------------------------------------------------------------------------------


class NumpyProcessor:
    """One raw sample {"images": {camera: image}, "state": (S,), "task": str} -> one example of graph inputs."""

    def __init__(self, manifest) -> None:
        proc, norm = manifest.processor, manifest.normalization
        if proc is None or norm is None:
            raise ProcessorError(
                f"{manifest.root} was exported without a processor (model only): feed model inputs to "
                "OnnxRunner.sample() instead"
            )
        self.config = proc
        self.variant = manifest.variant
        self.image_size = int(manifest.model["image_size"])
        self.prompt_length = int(manifest.model["prompt_length"])
        self.max_state_dim = int(manifest.model["max_state_dim"])
        self.state_dim, self.action_dim = int(proc["state_dim"]), int(proc["action_dim"])
        self.state_stats, self.action_stats = norm["state"], norm["action"]
        self.camera_map: dict[str, str] = dict(proc["camera_map"])  # source camera -> model slot
        self.slot_source = {slot: src for src, slot in self.camera_map.items()}
        self.slots: list[str] = list(manifest.cameras["exported"])
        self.tokenizer = SentencePieceTokenizer(manifest.root / proc["tokenizer_file"])

    def __call__(self, sample: dict) -> dict[str, np.ndarray]:
        for key in ("images", "state", "task"):
            if key not in sample:
                raise ProcessorError(f"sample lacks {key!r} (has {sorted(sample)})")
        if not isinstance(sample["task"], str):
            raise ProcessorError(f"task must be a string, got {type(sample['task']).__name__}")
        images = sample["images"]
        unknown = [k for k in images if k not in self.camera_map]
        if unknown:
            raise ProcessorError(
                f"unknown camera {unknown[0]!r}; the processor maps {sorted(self.camera_map)}"
            )
        size = self.image_size
        out, masks = [], []
        for slot in self.slots:
            src = self.slot_source.get(slot)
            if src is None:  # exported slot that no camera feeds: -1 image, masked
                out.append(np.full((3, size, size), -1.0, dtype=np.float32))
                masks.append(False)
                continue
            if src not in images:
                raise ProcessorError(f"missing camera {src!r} (model slot {slot!r}); got {sorted(images)}")
            out.append(resize_with_pad(image_to_chw(images[src], src), size) * 2 - 1)  # [-1, 1]
            masks.append(True)
        state = np.asarray(sample["state"], dtype=np.float32)
        if state.ndim != 1 or state.shape[0] != self.state_dim:
            raise ProcessorError(f"state must have shape ({self.state_dim},), got {state.shape}")
        state = normalize(state, self.state_stats)
        padded = np.zeros(self.max_state_dim, dtype=np.float32)
        padded[: self.state_dim] = state
        in_prompt = padded if self.config.get("pad_state_in_prompt") else state
        text = prompt(self.variant, sample["task"], in_prompt)
        tokens, token_masks = self.tokenizer.tokenize(text, self.prompt_length)
        return {
            "images": np.stack(out),  # [n_exported, 3, S, S]
            "image_masks": np.asarray(masks, dtype=bool),  # [n_exported]
            "tokens": tokens,  # [L]
            "token_masks": token_masks,  # [L]
            "state": padded,  # [max_state_dim] (π0's state token; π0.5 reads it from the prompt)
        }

    def postprocess(self, actions: np.ndarray) -> np.ndarray:
        """Normalised [..., chunk, max_action_dim] -> robot actions [..., chunk, action_dim]."""
        return unnormalize(actions[..., : self.action_dim].astype(np.float32), self.action_stats)
