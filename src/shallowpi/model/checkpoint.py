"""Checkpoints: LeRobot / openpi key names, tied embeddings, strict loading, pretrained folders.

A pretrained folder is LeRobot's layout: `config.json` (LeRobot's fields, `type` pi0|pi05) and
`model.safetensors`. Sizes LeRobot cannot express go in a "shallowpi" object inside config.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

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

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(ValueError):
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


def load_state_dict(
    model: PiModel, source: Mapping[str, torch.Tensor] | str | Path, *, assign: bool = False
) -> None:
    """Strictly load LeRobot (`model.` prefix) or openpi (no prefix) weights into `model`.

    `source` is a dict or a .safetensors path (read lazily: the expert's unused lm_head is never loaded).
    Missing, unexpected or wrongly shaped keys raise one CheckpointError that lists them; nothing is copied
    unless everything fits.
    """
    if isinstance(source, (str, Path)):
        handle = safe_open(str(source), framework="pt")
        names = list(handle.keys())

        def get(n: str) -> torch.Tensor:
            return handle.get_tensor(n)

        def shape_of(n: str) -> tuple[int, ...]:
            return tuple(handle.get_slice(n).get_shape())
    else:
        names = list(source.keys())

        def get(n: str) -> torch.Tensor:
            return source[n]

        def shape_of(n: str) -> tuple[int, ...]:
            return tuple(source[n].shape)

    external = {n.removeprefix("model."): n for n in names}
    if len(external) != len(names):
        raise CheckpointError("checkpoint mixes LeRobot ('model.' prefix) and openpi names for the same keys")
    problem = _variant_mismatch(model.config, set(external))
    if problem:
        raise CheckpointError(problem)

    expected = {to_external(k): (k, tuple(v.shape)) for k, v in model.state_dict().items()}
    # Tied embedding: accept embed_tokens, lm_head or both (then they must agree).
    if EMBED not in external and LM_HEAD in external:
        external[EMBED] = external.pop(LM_HEAD)
    elif LM_HEAD in external:
        tied = external.pop(LM_HEAD)
        if shape_of(tied) != shape_of(external[EMBED]) or not torch.equal(get(tied), get(external[EMBED])):
            raise CheckpointError(f"{LM_HEAD} and {EMBED} are both present but differ (they are tied)")
    external.pop(EXPERT_LM_HEAD, None)

    missing = sorted(set(expected) - set(external))
    unexpected = sorted(set(external) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {shape_of(external[k])} vs model {expected[k][1]}"
        for k in set(expected) & set(external)
        if shape_of(external[k]) != expected[k][1]
    )
    if missing or unexpected or shapes:
        parts = ["checkpoint does not match the model config (strict loading):"]
        if missing:
            parts.append(_summarise("missing keys", missing))
        if unexpected:
            parts.append(_summarise("unexpected keys", unexpected))
        if shapes:
            parts.append(_summarise("wrongly shaped keys", shapes))
        raise CheckpointError("\n".join(parts))
    state = {expected[k][0]: get(external[k]) for k in expected}
    model.load_state_dict(state, strict=True, assign=assign)


# pretrained folders -----------------------------------------------------------------------------------------


def read_config(path: str | Path) -> PiConfig:
    path = Path(path)
    cfg_file = path / CONFIG_NAME if path.is_dir() else path
    if not cfg_file.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {path} (expected a LeRobot pretrained_model folder)")
    try:
        raw = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file} is not valid JSON: {e}") from e
    return config_from_lerobot(raw)


def load_model(path: str | Path, *, device: str | torch.device = "cpu", dtype: str | None = None) -> PiModel:
    """Load a pretrained folder (LeRobot layout) into a PiModel. Strict: any key mismatch raises."""
    path = Path(path)
    cfg = read_config(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {path}")
    want_dtype = dtype or cfg.dtype
    cfg.dtype = "float32"  # build plainly, take the stored tensors as they are, then apply the dtype policy
    with torch.device("meta"):
        model = PiModel(cfg)
    try:
        load_state_dict(model, weights, assign=True)
    except CheckpointError:
        raise
    except Exception as e:  # safetensors header errors, truncated files
        raise CheckpointError(f"cannot read {weights}: {e}") from e
    if want_dtype == "bfloat16":
        model.to_bfloat16()
    model.config.dtype = want_dtype
    return model.to(device).eval()


def save_model(model: PiModel, path: str | Path, *, lerobot_overrides: dict | None = None) -> Path:
    """Write `config.json` + `model.safetensors` (LeRobot naming) atomically: a temp folder, then rename.

    The tied embedding is written once, as `…paligemma.lm_head.weight`, which is what LeRobot's own
    `save_pretrained` (safetensors' `save_model` keeps the first name of tied tensors) and openpi's converter
    write; storing both names would double the largest tensor. Files other than ours in `path` are kept.
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
        if path.exists():
            for name in (WEIGHTS_NAME, CONFIG_NAME):
                os.replace(tmp / name, path / name)
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, path)
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
    "to_internal",
]
