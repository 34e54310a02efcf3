"""The processor specification: every rule from a raw sample to model inputs (and back), once, without torch.

Two processors run these rules: the torch one (`shallowpi.data.processor`, with `data.transforms` and
`data.prompt`) for training, evaluation and the torch server, and the numpy one of the ONNX runner
(`shallowpi.onnx_runtime.processor`) on robots without torch. Both call this module for everything but pixel
resampling, so they cannot disagree on a prompt, a cut, a bin or a normalised value; a parametrised test
(tests/test_processor_spec.py) holds them equal on a table of prompts and states.

Where it lives: in `shallowpi.data`, the layer that owns processors (docs/architecture.md), importing only
numpy, sentencepiece and the base layer (`errors`, `cameras`). `shallowpi/data/__init__.py` imports its
modules on first use, so `import shallowpi.data.processor_spec` pulls in no torch (tests/test_layering.py
checks that statically, tests/test_onnx_runner_no_torch.py by running without torch).

    ProcessorConfig         the settings, saved with a model and copied into an ONNX manifest
    prompt                  clean_task, pi0_prompt, discretize_state, pi05_prompt, build_prompt
    fitting                 max_task_chars, check_task (before tokenising), fit_prompt (refuse, or cut: π0 the
                            last tokens, π0.5 the task text only), prompt_ids (ids + mask, right-padded)
    normalisation           norm_terms (the constants from the stats), normalize / unnormalize (the
                            arithmetic: the same expressions on numpy arrays or torch tensors), check_stats,
                            feature_dim
    sample / cameras        check_sample, check_state, camera_sources, image_layout, resize_geometry
    SentencePieceTokenizer  the tokenizer both backends encode with (PaliGemma's special ids)

Not here: the bilinear resampling itself (torch's `interpolate` and its numpy re-implementation, held equal
by the same test) and training augmentation (torch only).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import sentencepiece as spm

from shallowpi.cameras import DEFAULT_CAMERAS
from shallowpi.errors import MissingFileError, UserError

Variant = Literal["pi0", "pi05"]
NormMode = Literal["MEAN_STD", "QUANTILES", "IDENTITY"]
NORM_MODES = ("MEAN_STD", "QUANTILES", "IDENTITY")
EPS = 1e-8  # LeRobot's normalisation eps (openpi uses 1e-6)
STATE_BINS = 256  # π0.5 writes the normalised state into its prompt as integers in [-1, 255]


class ProcessorError(UserError):
    """A sample the processor cannot take (missing key, unknown camera, wrong shape); the message names it."""


class PromptTooLongError(ProcessorError):
    """The prompt has more tokens than the model reads, and truncation was not asked for."""


# ------------------------------------------------------------------------------------------ settings
@dataclass
class ProcessorConfig:
    variant: Variant = "pi05"
    camera_map: dict[str, str] = field(default_factory=dict)  # dataset/robot camera key -> model slot
    cameras: tuple[str, ...] = DEFAULT_CAMERAS  # model slots, in prefix order (the model config's `cameras`)
    wrist_cameras: tuple[str, ...] = ()  # source keys or slot names that get no crop/rotation
    image_size: int = 224
    max_state_dim: int = 32
    max_action_dim: int = 32
    chunk_size: int = 50
    tokenizer_max_length: int | None = None  # None: LeRobot's default, 48 (pi0) / 200 (pi05)
    state_norm: NormMode | None = None  # None: MEAN_STD for pi0, QUANTILES for pi05 (LeRobot defaults)
    action_norm: NormMode | None = None
    state_dim: int | None = None  # real dims; None: taken from the stats
    action_dim: int | None = None
    state_key: str = "observation.state"  # stats feature names
    action_key: str = "action"
    # π0.5 prompt state: openpi and LeRobot after 0.4.4 discretise the unpadded state (S numbers); LeRobot
    # 0.4.4 padded it to max_state_dim first (32 numbers, padded zeros -> bin 128). Default: unpadded; set
    # True to reproduce checkpoints fine-tuned with LeRobot 0.4.4.
    pad_state_in_prompt: bool = False
    # π0 prompt: openpi's cleaning (strip, "_" -> " ") + "\n" (default), or, as LeRobot's π0 pipeline
    # (pi0_new_line_processor), the task as given + "\n" (set by the reader of LeRobot's folders).
    clean_pi0_task: bool = True
    # A prompt longer than tokenizer_max_length is an error naming its token count. True: cut it to fit,
    # as LeRobot does silently; π0.5 cuts the task text only, never the state that follows it.
    truncate_prompt: bool = False

    def __post_init__(self):
        if self.variant not in ("pi0", "pi05"):
            raise UserError(f"unknown variant {self.variant!r}; choose 'pi0' or 'pi05'")
        self.cameras = tuple(self.cameras)
        self.wrist_cameras = tuple(self.wrist_cameras)
        default_norm = "MEAN_STD" if self.variant == "pi0" else "QUANTILES"
        self.state_norm = self.state_norm or default_norm
        self.action_norm = self.action_norm or default_norm
        for name in ("state_norm", "action_norm"):
            if getattr(self, name) not in NORM_MODES:
                raise UserError(f"{name}={getattr(self, name)!r}; choose from {NORM_MODES}")
        if self.tokenizer_max_length is None:
            self.tokenizer_max_length = 48 if self.variant == "pi0" else 200
        bad = [s for s in self.camera_map.values() if s not in self.cameras]
        if bad:
            raise UserError(
                f"camera_map targets unknown model slot {bad[0]!r}; model slots: {list(self.cameras)}"
            )
        if len(set(self.camera_map.values())) != len(self.camera_map):
            raise UserError(f"camera_map sends two cameras to one slot: {self.camera_map}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ProcessorConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:  # a typo or a newer shallowpi's field: silently dropping it would change the inputs
            raise UserError(f"unknown ProcessorConfig fields: {sorted(unknown)}")
        return cls(**d)


# ------------------------------------------------------------------------------------------ prompt
def clean_task(task: str) -> str:
    """openpi's cleaning: strip, '_' -> ' ', newlines -> ' ' (task names like 'pick_up_cube' read as words)."""
    return task.strip().replace("_", " ").replace("\n", " ")


def pi0_prompt(task: str, *, clean: bool = True) -> str:
    """π0: "<task>\\n". openpi cleans the task (`clean_task`) and encodes the "\\n" separately (same text);
    LeRobot's Pi0NewLineProcessor (`clean=False`) appends "\\n" to the task as given, unless it ends with one."""
    if clean:
        return clean_task(task) + "\n"
    return task if task.endswith("\n") else task + "\n"


def discretize_state(state, bins: int = STATE_BINS) -> np.ndarray:
    """Normalised state [S] -> integer bins [S] in [-1, bins-1]: bin k covers [-1 + 2k/bins, -1 + 2(k+1)/bins).

    Values below -1 give -1 and values >= 1 - 2/bins give bins-1, exactly like
    `np.digitize(state, np.linspace(-1, 1, bins + 1)[:-1]) - 1` in openpi and LeRobot. `state`: anything
    numpy reads (a CPU torch tensor too).
    """
    edges = np.linspace(-1, 1, bins + 1)[:-1]
    return np.digitize(np.asarray(state).astype(np.float64), bins=edges) - 1


def pi05_prompt(task: str, normalized_state) -> str:
    """π0.5: "Task: <task>, State: <b_1 ... b_S>;\\nAction: " with the normalised state as 256-bin integers."""
    state_str = " ".join(str(int(b)) for b in discretize_state(normalized_state))
    return f"Task: {clean_task(task)}, State: {state_str};\nAction: "


def prompt_state(normalized_state, config: ProcessorConfig) -> np.ndarray:
    """The state π0.5 writes into its prompt: the normalised state [S], or (LeRobot 0.4.4,
    `pad_state_in_prompt`) zero-padded to [max_state_dim]."""
    s = np.asarray(normalized_state, dtype=np.float32).reshape(-1)
    if config.pad_state_in_prompt and s.shape[0] < config.max_state_dim:
        s = np.concatenate([s, np.zeros(config.max_state_dim - s.shape[0], np.float32)])
    return s


def build_prompt(config: ProcessorConfig, normalized_state) -> Callable[[str], str]:
    """task -> the prompt text of `config`'s variant (π0.5: with this normalised, unpadded state [S])."""
    if config.variant == "pi05":
        state = prompt_state(normalized_state, config)
        return lambda task: pi05_prompt(task, state)
    return functools.partial(pi0_prompt, clean=config.clean_pi0_task)


# ------------------------------------------------------------------------------------------ fitting
class Encoder(Protocol):
    """What the fitting rules need of a tokenizer (`SentencePieceTokenizer` and its torch subclass)."""

    max_piece_chars: int
    pad_id: int

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]: ...


def max_task_chars(config: ProcessorConfig, max_piece_chars: int) -> int:
    """Longest task text that can fit the prompt: no token stands for more characters than the tokenizer's
    longest piece. Checked before tokenising, so a huge prompt costs nothing."""
    return config.tokenizer_max_length * max_piece_chars


def check_task(task: str, config: ProcessorConfig, max_piece_chars: int) -> None:
    """A task too long to ever fit the prompt is refused without tokenising it (unless truncating)."""
    limit = max_task_chars(config, max_piece_chars)
    if not config.truncate_prompt and len(task) > limit:
        raise PromptTooLongError(
            f"the task is {len(task)} characters, more than a {config.tokenizer_max_length}-token "
            f"prompt can hold (at most {limit} characters); shorten it or ask for truncation "
            "(truncate_prompt / --truncate-prompt)"
        )


def fit_prompt(task: str, normalized_state, config: ProcessorConfig, tokenizer: Encoder) -> list[int]:
    """The prompt's token ids (BOS first), at most `tokenizer_max_length` of them.

    Too long: PromptTooLongError naming the token count and the limit, or with `truncate_prompt` the prompt
    cut to fit (π0: the last tokens, as LeRobot; π0.5: the end of the task, so the state and "Action: "
    always stay whole).
    """
    limit = config.tokenizer_max_length
    check_task(task, config, tokenizer.max_piece_chars)
    task = task[: max_task_chars(config, tokenizer.max_piece_chars)]  # text past this can never be kept
    build = build_prompt(config, normalized_state)

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_bos=True)

    ids = encode(build(task))
    if len(ids) <= limit:
        return ids
    if not config.truncate_prompt:
        raise PromptTooLongError(
            f"the prompt is {len(ids)} tokens, more than the limit of {limit} (tokenizer_max_length) for "
            f"task {task[:60]!r}{'...' if len(task) > 60 else ''}; shorten the task or ask for truncation "
            "(truncate_prompt / --truncate-prompt)"
        )
    if config.variant == "pi0":
        return ids[:limit]
    bare = len(encode(build("")))
    if bare > limit:
        raise PromptTooLongError(
            f"the pi05 prompt without any task is {bare} tokens (the state takes them), more than the "
            f"limit of {limit}: raise tokenizer_max_length"
        )
    lo, hi = 0, len(task)  # characters of the task kept; `lo` always fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(encode(build(task[:mid]))) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return encode(build(task[:lo]))


def pad_ids(ids: Sequence[int], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """ids (at most `length`) -> (int64 [length] right-padded with `pad_id`, bool mask [length])."""
    n = len(ids)
    if n > length:
        raise ValueError(f"{n} ids do not fit {length}")
    tokens = np.full(length, pad_id, dtype=np.int64)  # [L]
    tokens[:n] = ids
    return tokens, np.arange(length) < n  # [L], [L]


def prompt_ids(
    task: str, normalized_state, config: ProcessorConfig, tokenizer: Encoder
) -> tuple[np.ndarray, np.ndarray]:
    """The model's prompt input: (ids int64 [L], mask bool [L]), L = tokenizer_max_length (`fit_prompt`)."""
    ids = fit_prompt(task, normalized_state, config, tokenizer)
    return pad_ids(ids, config.tokenizer_max_length, tokenizer.pad_id)


# ------------------------------------------------------------------------------------------ normalisation
_NEEDS = {"MEAN_STD": ("mean", "std"), "QUANTILES": ("q01", "q99"), "IDENTITY": ()}


def _stat(stats: Mapping[str, Any], name: str, dtype) -> np.ndarray:
    if name not in stats:
        hint = (
            " (run `shallowpi compute-stats --dataset DATASET` to add quantiles)"
            if name.startswith("q")
            else ""
        )
        raise UserError(f"normalisation needs stat {name!r}, which the stats lack{hint}")
    return np.asarray(stats[name]).astype(dtype).reshape(-1)


def norm_terms(stats: Mapping[str, Any], mode: str, dtype=np.float32) -> dict[str, np.ndarray]:
    """The constants of a normalisation, in `dtype`: x_norm = f(x, offset, scale).

    MEAN_STD: offset = mean, scale = std + eps; QUANTILES: offset = q01, scale = q99 - q01 (eps only where
    q01 == q99); IDENTITY: none. LeRobot's formulas and eps.
    """
    if mode == "IDENTITY":
        return {}
    if mode == "MEAN_STD":
        return {"offset": _stat(stats, "mean", dtype), "scale": _stat(stats, "std", dtype) + EPS}
    if mode == "QUANTILES":
        lo, hi = _stat(stats, "q01", dtype), _stat(stats, "q99", dtype)
        denom = hi - lo
        return {"offset": lo, "scale": np.where(denom == 0, np.asarray(EPS, dtype), denom).astype(dtype)}
    raise UserError(f"unknown normalisation mode {mode!r}; choose from {NORM_MODES}")


def normalize(x, terms: Mapping[str, Any], mode: str):
    """x [..., D] -> normalised [..., D]; `terms` from `norm_terms`, as arrays of x's kind (numpy or torch).
    MEAN_STD: (x - mean) / (std + eps); QUANTILES: to [-1, 1] over [q01, q99], no clipping (LeRobot)."""
    if mode == "IDENTITY":
        return x
    if mode == "MEAN_STD":
        return (x - terms["offset"]) / terms["scale"]
    if mode == "QUANTILES":
        return 2 * (x - terms["offset"]) / terms["scale"] - 1
    raise UserError(f"unknown normalisation mode {mode!r}; choose from {NORM_MODES}")


def unnormalize(x, terms: Mapping[str, Any], mode: str):
    """Inverse of `normalize`."""
    if mode == "IDENTITY":
        return x
    if mode == "MEAN_STD":
        return x * terms["scale"] + terms["offset"]
    if mode == "QUANTILES":
        return (x + 1) * terms["scale"] / 2 + terms["offset"]
    raise UserError(f"unknown normalisation mode {mode!r}; choose from {NORM_MODES}")


def check_stats(stats: Mapping[str, Any], key: str, mode: str, dim: int) -> None:
    """The statistics `mode` needs are there, finite, and `dim` long (else one error naming them)."""
    for name in _NEEDS[mode]:
        if name not in stats:
            hint = (
                " (run `shallowpi compute-stats --dataset DATASET` to add quantiles)"
                if name.startswith("q")
                else ""
            )
            raise UserError(
                f"{mode} normalisation of {key!r} needs stat {name!r}, which the stats lack{hint}"
            )
        v = np.asarray(stats[name], dtype=np.float64).reshape(-1)
        if not np.isfinite(v).all():
            bad = np.flatnonzero(~np.isfinite(v)).tolist()
            raise UserError(
                f"normalisation statistic {key}.{name} holds non-finite values (nan/inf at index "
                f"{', '.join(map(str, bad[:8]))}): refusing stats that would make every action non-finite"
            )
        if v.size != dim:
            raise UserError(f"stats {key}.{name} have {v.size} values, expected {dim}")


def feature_dim(stats: Mapping[str, Any], given: int | None, key: str) -> int:
    """A feature's real dim: the one given, else the length of its statistics."""
    if given is not None:
        return given
    for name in ("mean", "q01", "min"):
        if name in stats:
            return int(np.asarray(stats[name]).size)
    raise UserError(f"cannot tell the dim of {key!r}: no stats for it and no dim given in ProcessorConfig")


# ------------------------------------------------------------------------------------------ sample, cameras
def check_sample(sample: Mapping) -> None:
    """A processor sample has "images", "state" and a string "task"."""
    for key in ("images", "state", "task"):
        if key not in sample:
            raise ProcessorError(f"sample lacks {key!r} (has {sorted(sample)})")
    if not isinstance(sample["task"], str):
        raise ProcessorError(f"task must be a string, got {type(sample['task']).__name__}")


def check_state(shape: tuple[int, ...], dim: int) -> None:
    """The raw state is one vector of the processor's state dim."""
    if tuple(shape) != (dim,):
        raise ProcessorError(f"state must have shape ({dim},), got {tuple(shape)}")


def camera_sources(config: ProcessorConfig, images: Mapping, slots: Sequence[str]) -> list[str | None]:
    """The source camera of each slot in `slots` (None: no camera feeds it, the slot is masked); an unknown
    or missing camera is an error naming it."""
    unknown = [k for k in images if k not in config.camera_map]
    if unknown:
        raise ProcessorError(f"unknown camera {unknown[0]!r}; the processor maps {sorted(config.camera_map)}")
    slot_source = {slot: src for src, slot in config.camera_map.items()}
    out = []
    for slot in slots:
        src = slot_source.get(slot)
        if src is not None and src not in images:
            raise ProcessorError(f"missing camera {src!r} (model slot {slot!r}); got {sorted(images)}")
        out.append(src)
    return out


def image_layout(shape: tuple[int, ...], name: str) -> bool:
    """True if an RGB frame of this shape is channels-last [H, W, 3] (else [3, H, W]); other shapes refused."""
    if len(shape) != 3 or 3 not in (shape[0], shape[-1]):
        raise ProcessorError(
            f"camera {name!r}: expected an RGB image [3,H,W] or [H,W,3], got shape {tuple(shape)}"
        )
    return shape[0] != 3


def resize_geometry(h: int, w: int, size: int) -> tuple[int, int, int, int]:
    """Resize-with-pad of an [h, w] frame to [size, size]: (resized h, resized w, top pad, left pad). The
    aspect ratio is kept and the rest padded black on both sides (openpi, LeRobot after 0.4.4)."""
    scale = size / max(h, w)
    rh, rw = max(1, int(h * scale)), max(1, int(w * scale))
    return rh, rw, (size - rh) // 2, (size - rw) // 2


# ------------------------------------------------------------------------------------------ tokenizer
class SentencePieceTokenizer:
    """A SentencePiece model with PaliGemma's special ids (pad 0, eos 1, bos 2, unk 3): PaliGemma's own file
    for real checkpoints, or the small test-bed model shipped in `shallowpi/assets/tokenizer/`."""

    def __init__(self, model_file: str | Path):
        self.path = Path(model_file)
        if not self.path.is_file():
            raise MissingFileError(f"tokenizer model not found: {self.path}")
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        except (RuntimeError, OSError) as e:
            raise UserError(f"not a SentencePiece model: {self.path}: {e}") from e
        self.vocab_size = self.sp.get_piece_size()
        self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else 0
        self.bos_id, self.eos_id, self.unk_id = self.sp.bos_id(), self.sp.eos_id(), self.sp.unk_id()

    @functools.cached_property
    def max_piece_chars(self) -> int:
        """The most characters one token can stand for: bounds the text a prompt of L tokens can hold."""
        return max(len(self.sp.id_to_piece(i)) for i in range(self.vocab_size))

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        return self.sp.encode(text, add_bos=add_bos, add_eos=add_eos)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids if int(i) != self.pad_id])
