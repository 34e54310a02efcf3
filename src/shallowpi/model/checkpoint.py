"""Checkpoints: LeRobot / openpi key names, the (tied) embedding, strict loading, pretrained folders.

A pretrained folder is LeRobot's layout: `config.json` (LeRobot's fields, `type` pi0|pi05) and
`model.safetensors`. Sizes LeRobot cannot express go in a "shallowpi" object inside config.json.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from shallowpi.errors import MissingFileError, UserError
from shallowpi.hub import resolve_policy
from shallowpi.model.config import GemmaConfig, PiConfig, SiglipConfig
from shallowpi.model.lerobot_config import config_from_lerobot, config_to_lerobot
from shallowpi.model.pi import PiModel

# internal module prefix <-> openpi / LeRobot (without "model.") prefix
_PREFIXES = (
    ("vision.", "paligemma_with_expert.paligemma.model.vision_tower.vision_model."),
    ("projector.", "paligemma_with_expert.paligemma.model.multi_modal_projector.linear."),
    ("vlm.", "paligemma_with_expert.paligemma.model.language_model."),
    ("expert.", "paligemma_with_expert.gemma_expert.model."),
)
LM_HEAD = "paligemma_with_expert.paligemma.lm_head.weight"  # tied to the backbone's embed_tokens
EMBED = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
EXPERT_LM_HEAD = "paligemma_with_expert.gemma_expert.lm_head.weight"  # registered by LeRobot, never used

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(UserError):
    """A checkpoint does not fit the model config (missing / unexpected / wrongly shaped keys, wrong variant)."""


def to_external(name: str) -> str:
    """Internal parameter name -> openpi name (LeRobot adds "model.")."""
    for ours, theirs in _PREFIXES:
        if name.startswith(ours):
            return theirs + name[len(ours) :]
    return name


def to_internal(name: str) -> str:
    name = name.removeprefix("model.")
    for ours, theirs in _PREFIXES:
        if name.startswith(theirs):
            return ours + name[len(theirs) :]
    return name


def lerobot_state_dict(model: PiModel, prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The model's state dict in LeRobot naming, including the tied lm_head (same tensor as embed_tokens)."""
    sd = {prefix + to_external(k): v for k, v in model.state_dict().items()}
    sd[prefix + LM_HEAD] = sd[prefix + EMBED]
    return sd


def _variant_mismatch(cfg: PiConfig, names: set[str]) -> str | None:
    pi0_only = {"state_proj.weight", "action_time_mlp_in.weight"}
    pi05_only = {"time_mlp_in.weight"}
    adarms = any(re.search(r"gemma_expert\.model\..*\.dense\.weight$", n) for n in names)
    if cfg.variant == "pi05" and (names & pi0_only or (names and not adarms)):
        return "the checkpoint is a pi0 checkpoint (state_proj / action_time_mlp, plain RMSNorm expert) but the config is pi05"
    if cfg.variant == "pi0" and (names & pi05_only or adarms):
        return "the checkpoint is a pi05 checkpoint (time_mlp, adaRMS expert norms) but the config is pi0"
    return None


def _summarise(kind: str, keys: list[str], limit: int = 20) -> str:
    shown = "\n    ".join(keys[:limit])
    more = f"\n    ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"  {kind} ({len(keys)}):\n    {shown}{more}"


class _Source:
    """Uniform access to a state dict or a .safetensors file (read lazily, tensor by tensor)."""

    def __init__(self, source: Mapping[str, torch.Tensor] | str | Path) -> None:
        if isinstance(source, (str, Path)):
            try:
                self._handle = safe_open(str(source), framework="pt")
            except Exception as e:  # truncated file, corrupt header: safetensors' own error types
                raise CheckpointError(f"cannot read {source}: {e}") from e
            self.names = list(self._handle.keys())
            self._dict = None
        else:
            self._handle, self._dict = None, source
            self.names = list(source.keys())
        self.label = str(source) if isinstance(source, (str, Path)) else "the state dict"

    def get(self, n: str) -> torch.Tensor:
        if self._dict is not None:
            return self._dict[n]
        try:
            return self._handle.get_tensor(n)
        except Exception as e:  # data past the end of a truncated file
            raise CheckpointError(f"cannot read tensor {n} from {self.label}: {e}") from e

    def shape(self, n: str) -> tuple[int, ...]:
        if self._dict is not None:
            return tuple(self._dict[n].shape)
        return tuple(self._handle.get_slice(n).get_shape())

    def dtype(self, n: str) -> str:
        """'F32', 'BF16', 'F16', 'I64', ... (safetensors' names) for files; torch's for dicts."""
        if self._dict is not None:
            return str(self._dict[n].dtype).removeprefix("torch.")
        return str(self._handle.get_slice(n).get_dtype())


_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "float64", "float32", "float16", "bfloat16"}
_LAYER = re.compile(r"(language_model|gemma_expert\.model|vision_model\.encoder)\.layers\.(\d+)\.")
_STACKS = {"language_model": "backbone", "gemma_expert.model": "expert", "vision_model.encoder": "vision"}


def _depth_mismatch(cfg: PiConfig, names: set[str]) -> str | None:
    """'config.json says depth X but the weights hold Y layers', per stack, if they disagree."""
    held: dict[str, int] = {}
    for n in names:
        if m := _LAYER.search(n):
            stack = _STACKS[m.group(1)]
            held[stack] = max(held.get(stack, 0), int(m.group(2)) + 1)
    want = {"backbone": cfg.vlm.depth, "expert": cfg.expert.depth, "vision": cfg.vision.depth}
    bad = [
        f"{s} depth {want[s]} but the weights hold {held[s]} layers"
        for s in want
        if s in held and held[s] != want[s]
    ]
    if bad:
        return "the config depth disagrees with the weights: the config says " + "; ".join(bad)
    return None


def _plan(model_shapes: Mapping[str, tuple[int, ...]], cfg: PiConfig, src: _Source) -> dict[str, str]:
    """Internal parameter name -> checkpoint name, after every check that needs no tensor data.

    Raises one CheckpointError naming what does not fit: a mixed or wrong-variant checkpoint, a depth that
    disagrees with the config, missing / unexpected / misshaped keys, non-float tensors.
    """
    names = src.names
    if not names:
        raise CheckpointError(f"{src.label} holds no tensors")
    external = {n.removeprefix("model."): n for n in names}
    if len(external) != len(names):
        raise CheckpointError("checkpoint mixes LeRobot ('model.' prefix) and openpi names for the same keys")
    problem = _variant_mismatch(cfg, set(external))
    if problem:
        raise CheckpointError(problem)

    expected = {to_external(k): (k, tuple(v)) for k, v in model_shapes.items()}
    # The embedding: embed_tokens, or the lm_head tied to it (LeRobot <= 0.5, openpi, shallowpi write only
    # lm_head). Both: embed_tokens, as LeRobot loads it; 0.6.1 unties them and never trains the lm_head, so
    # after fine-tuning they differ, which is no error: π models never compute logits.
    if EMBED not in external and LM_HEAD in external:
        external[EMBED] = external.pop(LM_HEAD)
    elif LM_HEAD in external:
        head = external.pop(LM_HEAD)
        if src.shape(head) != src.shape(external[EMBED]):
            raise CheckpointError(
                f"{LM_HEAD} has shape {src.shape(head)} but {EMBED} has {src.shape(external[EMBED])}"
            )
        if not torch.equal(src.get(head), src.get(external[EMBED])):
            logger.warning(
                "note: %s: lm_head and embed_tokens differ (as LeRobot 0.6 saves them); using embed_tokens, "
                "as LeRobot does (π models never use the lm_head)",
                src.label,
            )
    external.pop(EXPERT_LM_HEAD, None)

    missing = sorted(set(expected) - set(external))
    unexpected = sorted(set(external) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {src.shape(external[k])} vs model {expected[k][1]}"
        for k in set(expected) & set(external)
        if src.shape(external[k]) != expected[k][1]
    )
    if missing or unexpected or shapes:
        depth = _depth_mismatch(cfg, set(external))
        parts = [depth] if depth else []
        parts.append("checkpoint does not match the model config (strict loading):")
        if missing:
            parts.append(_summarise("missing keys", missing))
        if unexpected:
            parts.append(_summarise("unexpected keys", unexpected))
        if shapes:
            parts.append(_summarise("wrongly shaped keys", shapes))
        raise CheckpointError("\n".join(parts))
    not_float = sorted(external[k] for k in expected if src.dtype(external[k]) not in _FLOAT_DTYPES)
    if not_float:
        raise CheckpointError(
            f"tensor {not_float[0]} has dtype {src.dtype(not_float[0])}; weights must be floating point"
            + (f" ({len(not_float) - 1} more)" if len(not_float) > 1 else "")
        )
    return {expected[k][0]: external[k] for k in expected}


def _check_finite(name: str, t: torch.Tensor, label: str) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise CheckpointError(
            f"tensor {name} in {label} holds {n_bad} non-finite value(s) (nan/inf): refusing to load it"
        )


def load_state_dict(
    model: PiModel, source: Mapping[str, torch.Tensor] | str | Path, *, assign: bool = False
) -> None:
    """Strictly load LeRobot (`model.` prefix) or openpi (no prefix) weights into `model`.

    `source` is a dict or a .safetensors path (read lazily: the expert's unused lm_head is never loaded).
    Missing, unexpected, wrongly shaped, non-float or non-finite tensors raise one CheckpointError that
    names them; nothing is copied unless everything fits.
    """
    src = _Source(source)
    plan = _plan({k: tuple(v.shape) for k, v in model.state_dict().items()}, model.config, src)
    state = {}
    for ours, theirs in plan.items():
        state[ours] = src.get(theirs)
        _check_finite(theirs, state[ours], src.label)
    model.load_state_dict(state, strict=True, assign=assign)


# pretrained folders -----------------------------------------------------------------------------------------


def read_config(path: str | Path) -> PiConfig:
    path = Path(path)
    cfg_file = path / CONFIG_NAME if path.is_dir() else path
    if not cfg_file.is_file():
        raise MissingFileError(f"no {CONFIG_NAME} in {path} (expected a LeRobot pretrained_model folder)")
    try:
        raw = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file} is not valid JSON: {e}") from e
    return config_from_lerobot(raw)


def _empty_model(cfg: PiConfig) -> PiModel:
    with torch.device("meta"):
        return PiModel(cfg)


def _weights_file(path: Path) -> Path:
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise MissingFileError(f"no {WEIGHTS_NAME} in {path}")
    return weights


def validate_checkpoint(path: str | Path) -> PiConfig:
    """Every check `load_model` makes (config, keys, shapes, depth, dtypes, finite values), reading one tensor
    at a time and keeping none: what `shallowpi inspect` runs. Returns the config."""
    path = Path(path)
    cfg = read_config(path)
    src = _Source(_weights_file(path))
    plan = _plan({k: tuple(v.shape) for k, v in _empty_model(cfg).state_dict().items()}, cfg, src)
    for theirs in plan.values():
        _check_finite(theirs, src.get(theirs), src.label)
    return cfg


def load_model(path: str | Path, *, device: str | torch.device = "cpu", dtype: str | None = None) -> PiModel:
    """Load a pretrained folder (LeRobot layout) into a PiModel. Strict: any key mismatch raises.

    The weights end up in `dtype` (default: config.json's) whatever the file stores: fp32, or LeRobot's
    bf16 policy (`PiModel.to_bfloat16`). fp16 / fp64 tensors are cast; non-float ones are refused.
    `path` may be a Hugging Face hub id (`org/name[@revision]`, `shallowpi.hub.resolve_policy`).
    """
    path = resolve_policy(path)
    cfg = read_config(path)
    weights = _weights_file(path)
    want_dtype = dtype or cfg.dtype
    if want_dtype not in ("float32", "bfloat16"):
        raise UserError(f"dtype must be 'float32' or 'bfloat16', got {want_dtype!r}")
    cfg.dtype = "float32"  # build plainly, load the stored tensors, then apply the dtype policy
    model = _empty_model(cfg)
    load_state_dict(model, weights, assign=True)
    model.float()  # stored bf16 / fp16 / fp64 -> fp32 (exact except from fp64)
    if want_dtype == "bfloat16":
        model.to_bfloat16()
    model.config.dtype = want_dtype
    return model.to(device).eval()


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # instant, and the old folder's removal does not touch it
    except OSError:
        shutil.copy2(src, dst)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # file system without the flag
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def save_model(model: PiModel, path: str | Path, *, lerobot_overrides: dict | None = None) -> Path:
    """Write `config.json` + `model.safetensors` (LeRobot naming) atomically, as a pair.

    Both files are written into a staged folder beside `path` (with links to the other files already in
    `path`, e.g. the processor's, which are kept), then the staged folder replaces `path` in one step
    (renameat2 exchange; elsewhere two renames, the old folder kept as `.<name>.old-*` until the second).
    A reader never sees the new weights with the old config or the reverse.

    The tied embedding is written once, as `…paligemma.lm_head.weight`, which is what LeRobot's own
    `save_pretrained` (safetensors' `save_model` keeps the first name of tied tensors) and openpi's converter
    write; storing both names would double the largest tensor.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        sd = {k: v.detach().contiguous().cpu() for k, v in lerobot_state_dict(model).items()}
        sd.pop("model." + EMBED)
        save_file(sd, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        cfg = config_to_lerobot(model.config, overrides=lerobot_overrides)
        (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=4) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700 folders; models are meant to be shared
        if not path.exists():
            os.replace(tmp, path)
            return path
        for entry in path.iterdir():
            if entry.name in (WEIGHTS_NAME, CONFIG_NAME):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, tmp / entry.name, symlinks=True, copy_function=_link_or_copy)
            elif entry.is_symlink():
                os.symlink(os.readlink(entry), tmp / entry.name)
            else:
                _link_or_copy(str(entry), str(tmp / entry.name))
        if _exchange(tmp, path):  # tmp now holds the old folder
            shutil.rmtree(tmp)
            return path
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        os.replace(path, old / "x")
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old / "x", path)  # put the old pair back
            raise
        shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


__all__ = [
    "CheckpointError",
    "GemmaConfig",
    "SiglipConfig",
    "load_model",
    "load_state_dict",
    "lerobot_state_dict",
    "read_config",
    "save_model",
    "to_external",
    "validate_checkpoint",
    "to_internal",
    "validate_checkpoint",
]
