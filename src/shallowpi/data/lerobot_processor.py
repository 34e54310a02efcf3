"""Processor files as LeRobot writes them -> shallowpi's Preprocessor / Postprocessor (no lerobot import).

A pretrained folder written by LeRobot (`save_pretrained` of its policy and of its two processor pipelines)
has `policy_preprocessor.json` + `policy_preprocessor_step_<i>_normalizer_processor.safetensors` and
`policy_postprocessor.json` + `..._unnormalizer_processor.safetensors`, and no tokenizer file: its tokenizer
step names a Hub id (`google/paligemma-3b-pt-224`). Steps understood (0.4.4 and 0.5+ / 0.6, π0 and π0.5):

    rename_observations_processor   dataset camera key -> model camera slot (the camera map)
    normalizer_processor            stats (flat `observation.state.q01`, ...), norm_map, eps
    unnormalizer_processor          the action stats the postprocessor uses
    pi05_prepare_state_tokenizer_processor_step  π0.5 state-in-prompt (0.4.4 pads the state to
                                    max_state_dim before binning it, 0.5+ does not; told apart by the
                                    relative-actions step every 0.5+ π pipeline has)
    pi0_new_line_processor          π0's "\n" prompt
    tokenizer_processor             max_length, padding (right / max_length / truncation only)
    relative_actions_processor / absolute_actions_processor (0.5+): accepted when disabled
    to_batch_processor, device_processor: nothing to do here
    shallowpi_preprocessor / shallowpi_postprocessor: the LeRobot plugin's own steps (whole processor
                                    config in the step, the tokenizer inside its state file; the stats in
                                    the normalizer / unnormalizer steps around it, or, in the first plugin
                                    layout, which had no such steps, in the plugin steps' state files)

Anything else is one clear error naming the step. The tokenizer comes from `tokenizer=` (the `--tokenizer`
option), then $SHALLOWPI_TOKENIZER, then a `tokenizer.model` in the folder, then the local Hugging Face
cache (`<hub cache>/models--google--paligemma-3b-pt-224/snapshots/*/tokenizer.model`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file

from shallowpi.atomic import write_atomic
from shallowpi.data import transforms
from shallowpi.data.processor import Postprocessor, Preprocessor, ProcessorConfig
from shallowpi.data.processor_files import (
    POSTPROCESSOR_JSON,
    PREPROCESSOR_JSON,
    flatten_stats,
    unflatten_stats,
)
from shallowpi.data.stats import Stats
from shallowpi.data.tokenizer import Tokenizer
from shallowpi.errors import MissingFileError, UserError
from shallowpi.hub import hub_cache
from shallowpi.jsonfile import read_json
from shallowpi.observation import Observation

TOKENIZER_ENV = "SHALLOWPI_TOKENIZER"
PALIGEMMA = "google/paligemma-3b-pt-224"
PLUGIN_PRE = "shallowpi_preprocessor"
PLUGIN_POST = "shallowpi_postprocessor"
TOKENIZER_KEY = "tokenizer.model_proto"  # uint8 bytes of the SentencePiece model inside a plugin state file

_PASSIVE = {"to_batch_processor", "device_processor"}
_KNOWN = _PASSIVE | {
    "rename_observations_processor",
    "normalizer_processor",
    "unnormalizer_processor",
    "pi05_prepare_state_tokenizer_processor_step",
    "pi0_new_line_processor",
    "tokenizer_processor",
    "relative_actions_processor",
    "absolute_actions_processor",
    PLUGIN_PRE,
    PLUGIN_POST,
}


class ProcessorFormatError(UserError):
    """LeRobot processor files that shallowpi cannot reproduce (names the step and the reason)."""


# ------------------------------------------------------------------------------------------ tokenizer
def find_tokenizer(name: str | None, folder: Path, tokenizer: str | Path | None = None) -> Path:
    """The SentencePiece file for a tokenizer step: explicit path, $SHALLOWPI_TOKENIZER, folder, HF cache."""
    given = tokenizer or os.environ.get(TOKENIZER_ENV)
    if given:
        if not Path(given).is_file():
            raise MissingFileError(f"tokenizer file not found: {given}")
        return Path(given)
    if (folder / "tokenizer.model").is_file():
        return folder / "tokenizer.model"
    name = name or PALIGEMMA
    repo = hub_cache() / f"models--{name.replace('/', '--')}" / "snapshots"
    found = sorted(repo.glob("*/tokenizer.model")) if repo.is_dir() else []
    if found:
        return found[-1]
    raise MissingFileError(
        f"{folder} has no tokenizer file (its tokenizer step names {name!r}, which LeRobot would download). "
        f"Give the SentencePiece model with --tokenizer PATH (or ${TOKENIZER_ENV}), or put it in the local "
        f"Hugging Face cache: {repo}/<revision>/tokenizer.model"
    )


def use_tokenizer(path: str | Path | None) -> None:
    """`--tokenizer PATH` of eval / serve: the tokenizer for LeRobot folders that ship none, also for the
    evaluation's worker processes (through $SHALLOWPI_TOKENIZER, which they inherit)."""
    if path is None:
        return
    if not Path(path).is_file():
        raise MissingFileError(f"--tokenizer: file not found: {path}")
    os.environ[TOKENIZER_ENV] = str(Path(path).resolve())


def tokenizer_from_bytes(data: bytes) -> Tokenizer:
    """A Tokenizer for model bytes kept in a state file (stored once per content under ~/.cache/shallowpi)."""
    root = Path(os.environ.get("SHALLOWPI_CACHE", Path.home() / ".cache" / "shallowpi")) / "tokenizers"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{hashlib.sha256(data).hexdigest()[:16]}.model"
    if not path.is_file():
        write_atomic(path, lambda tmp: Path(tmp).write_bytes(data))
    return Tokenizer(path)


def tokenizer_bytes(tok: Tokenizer) -> torch.Tensor:
    return torch.frombuffer(bytearray(tok.path.read_bytes()), dtype=torch.uint8).clone()  # [n_bytes]


def plugin_pre_state(pre: Preprocessor) -> dict[str, torch.Tensor]:
    """State file of the plugin's `shallowpi_preprocessor` step: the tokenizer's bytes (+ flat stats, none
    when the step does not normalise)."""
    c = pre.config
    out = flatten_stats({c.state_key: pre.state_stats, c.action_key: pre.action_stats})
    out[TOKENIZER_KEY] = tokenizer_bytes(pre.tokenizer)
    return out


def plugin_post_state(post: Postprocessor) -> dict[str, torch.Tensor]:
    """State file of the plugin's `shallowpi_postprocessor` step: the action stats."""
    key = post.config.action_key
    return flatten_stats({key: post.action_stats})


# Observation field -> key in LeRobot's transition: the plugin's preprocessor hands the model's Observation
# to LeRobot as plain tensors (its device step moves those), and the plugin's policy reads it back.
PLUGIN_OBSERVATION_KEYS = {
    "images": "observation.shallowpi.images",  # [B, n_slots, 3, S, S] in [-1, 1]
    "image_masks": "observation.shallowpi.image_masks",  # [B, n_slots]
    "tokens": "observation.shallowpi.tokens",  # [B, L]
    "token_masks": "observation.shallowpi.token_masks",  # [B, L]
    "state": "observation.state",  # [B, max_state_dim], normalised, zero-padded
}


def plugin_observation(obs: Observation) -> dict[str, torch.Tensor]:
    """`obs` as the plugin's preprocessor writes it into LeRobot's transition."""
    return {key: getattr(obs, name) for name, key in PLUGIN_OBSERVATION_KEYS.items()}


def observation_from_plugin(batch: Mapping[str, torch.Tensor]) -> Observation:
    """The Observation in a batch the plugin's preprocessor produced (the plugin policy's input)."""
    missing = [key for key in PLUGIN_OBSERVATION_KEYS.values() if key not in batch]
    if missing:
        raise KeyError(f"batch lacks {missing}: was it made by the {PLUGIN_PRE} processor step?")
    return Observation(**{name: batch[key] for name, key in PLUGIN_OBSERVATION_KEYS.items()})


# ------------------------------------------------------------------------------------------ reading
def _read_json(path: Path) -> dict:
    data = read_json(path, ProcessorFormatError)
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise ProcessorFormatError(f"{path} is not a LeRobot processor file (no 'steps' list)")
    return data


def _steps(path: Path) -> list[dict]:
    steps = _read_json(path)["steps"]
    for i, s in enumerate(steps):
        name = s.get("registry_name") or s.get("class")
        if name not in _KNOWN:
            raise ProcessorFormatError(
                f"{path.name} step {i} ({name!r}) is not a step shallowpi can reproduce; known steps: "
                f"{sorted(_KNOWN)}"
            )
    return steps


def _state(folder: Path, step: dict, where: str) -> dict[str, torch.Tensor]:
    name = step.get("state_file")
    if not name:
        raise ProcessorFormatError(f"{where}: the {step['registry_name']} step has no state_file")
    if not (folder / name).is_file():
        raise MissingFileError(f"processor state file missing: {folder / name}")
    return load_file(str(folder / name))


def _unflatten(flat: dict[str, torch.Tensor]) -> Stats:
    return unflatten_stats(flat, skip=(TOKENIZER_KEY,))  # the plugin's state file holds the tokenizer too


def _feature_key(cfg: dict, kind: str, where: str) -> str | None:
    keys = [k for k, f in (cfg.get("features") or {}).items() if f.get("type") == kind]
    if len(keys) > 1:
        raise ProcessorFormatError(f"{where}: more than one {kind} feature {keys}; shallowpi takes one")
    return keys[0] if keys else None


def _norm_mode(cfg: dict, kind: str, where: str) -> str:
    mode = (cfg.get("norm_map") or {}).get(kind, "IDENTITY")
    if mode not in transforms.NORM_MODES:
        raise ProcessorFormatError(
            f"{where}: normalisation {mode!r} for {kind} is not supported; shallowpi has {list(transforms.NORM_MODES)}"
        )
    eps = float(cfg.get("eps", transforms.EPS))
    if eps != transforms.EPS:
        raise ProcessorFormatError(f"{where}: eps {eps} differs from LeRobot's default {transforms.EPS}")
    return mode


def is_lerobot_layout(folder: str | Path) -> bool:
    return (Path(folder) / PREPROCESSOR_JSON).is_file()


def read_lerobot_processor(
    folder: str | Path, model: ProcessorConfig, *, tokenizer: str | Path | None = None
) -> tuple[Preprocessor, Postprocessor]:
    """Preprocessor + Postprocessor equal to the pipelines LeRobot saved in `folder` for a model whose input
    geometry `model` gives (variant, camera slots, image size, padded dims, chunk size, prompt length: what
    LeRobot keeps in config.json, `shallowpi.pretrained.processor_config(PiConfig)`)."""
    d = Path(folder)
    pre_steps = _steps(d / PREPROCESSOR_JSON)
    post_path = d / POSTPROCESSOR_JSON
    if not post_path.is_file():
        raise MissingFileError(
            f"no {POSTPROCESSOR_JSON} in {d} (LeRobot writes it next to {PREPROCESSOR_JSON})"
        )
    post_steps = _steps(post_path)
    names = [s.get("registry_name") for s in pre_steps]
    if PLUGIN_PRE in names:
        return _read_plugin(d, pre_steps, post_steps)

    for s in pre_steps + post_steps:
        if s["registry_name"] in ("relative_actions_processor", "absolute_actions_processor") and s.get(
            "config", {}
        ).get("enabled"):
            raise ProcessorFormatError(
                f"{d}: the {s['registry_name']} step is enabled (LeRobot 0.5+ relative actions, "
                "use_relative_actions=true); shallowpi does not reproduce relative actions yet"
            )
    lerobot_05 = "relative_actions_processor" in names  # every 0.5+ π pipeline has it, enabled or not
    by_name = {s["registry_name"]: s for s in pre_steps}
    where = f"{d / PREPROCESSOR_JSON}"
    norms = _normalisation(d, pre_steps, post_steps)

    variant = model.variant
    if variant == "pi05" and "pi05_prepare_state_tokenizer_processor_step" not in by_name:
        raise ProcessorFormatError(f"{where}: a pi05 config but no pi05_prepare_state_tokenizer step")
    if variant == "pi0" and "pi05_prepare_state_tokenizer_processor_step" in by_name:
        raise ProcessorFormatError(f"{where}: a pi0 config but a pi05 state-in-prompt step")
    pad_state = False
    if variant == "pi05":
        scfg = by_name["pi05_prepare_state_tokenizer_processor_step"].get("config", {})
        pad_state = bool(scfg.get("pad_state", not lerobot_05))
    tok = by_name.get("tokenizer_processor")
    if tok is None:
        raise ProcessorFormatError(f"{where} has no tokenizer_processor step")
    tcfg = tok.get("config", {})
    for key, want in (("padding_side", "right"), ("padding", "max_length"), ("truncation", True)):
        if tcfg.get(key, want) != want:
            raise ProcessorFormatError(
                f"{where}: tokenizer {key}={tcfg[key]!r}; shallowpi tokenises with {want!r}"
            )
    max_length = int(tcfg.get("max_length", model.tokenizer_max_length))
    if max_length != model.tokenizer_max_length:
        raise ProcessorFormatError(
            f"{where}: tokenizer max_length {max_length} differs from config.json tokenizer_max_length "
            f"{model.tokenizer_max_length}"
        )
    tok_file = tcfg.get("tokenizer_file")
    if tok_file and not tokenizer and not os.environ.get(TOKENIZER_ENV):
        tok_path = d / tok_file
        if not tok_path.is_file():
            raise MissingFileError(f"processor file missing: {tok_path}")
    else:
        tok_path = find_tokenizer(tcfg.get("tokenizer_name"), d, tokenizer)

    rename = by_name.get("rename_observations_processor", {}).get("config", {}).get("rename_map") or {}
    slots = list(model.cameras)
    # The rename map says which input camera feeds which slot; without one, every camera feature comes
    # under its own name. Slots nothing feeds stay masked (LeRobot's empty_camera_i, an unused wrist view).
    camera_map = {src: dst for src, dst in rename.items() if dst in slots}
    if not camera_map:
        camera_map = {slot: slot for slot in slots if ".empty_camera_" not in slot}
    config = ProcessorConfig(
        variant=variant,
        camera_map=camera_map,
        cameras=tuple(slots),
        image_size=model.image_size,
        max_state_dim=model.max_state_dim,
        max_action_dim=model.max_action_dim,
        chunk_size=model.chunk_size,
        tokenizer_max_length=max_length,
        state_norm=norms.state_norm,
        action_norm=norms.action_norm,
        state_key=norms.state_key,
        action_key=norms.action_key,
        pad_state_in_prompt=pad_state,
        clean_pi0_task="pi0_new_line_processor" not in by_name,  # LeRobot's π0 does not clean the task
    )
    tokenizer_obj = Tokenizer(tok_path)
    return Preprocessor(config, norms.stats, tokenizer_obj), Postprocessor(config, norms.stats)


class _Normalisation(NamedTuple):
    stats: Stats
    state_key: str
    action_key: str
    state_norm: str
    action_norm: str


def _normalisation(d: Path, pre_steps: list[dict], post_steps: list[dict]) -> _Normalisation:
    """Stats, feature keys and modes of LeRobot's normalizer_processor / unnormalizer_processor steps (the
    unnormaliser's action stats decide the outputs)."""
    where, post_path = str(d / PREPROCESSOR_JSON), d / POSTPROCESSOR_JSON
    norm = next((s for s in pre_steps if s.get("registry_name") == "normalizer_processor"), None)
    if norm is None:
        raise ProcessorFormatError(f"{where} has no normalizer_processor step (no stats to normalise with)")
    ncfg = norm.get("config", {})
    stats = _unflatten(_state(d, norm, where))
    state_key = _feature_key(ncfg, "STATE", where) or "observation.state"
    action_key = _feature_key(ncfg, "ACTION", where) or "action"
    state_norm, action_norm = _norm_mode(ncfg, "STATE", where), _norm_mode(ncfg, "ACTION", where)

    unnorm = next((s for s in post_steps if s.get("registry_name") == "unnormalizer_processor"), None)
    if unnorm is None:
        raise ProcessorFormatError(f"{post_path} has no unnormalizer_processor step")
    ucfg = unnorm.get("config", {})
    if _norm_mode(ucfg, "ACTION", str(post_path)) != action_norm:
        raise ProcessorFormatError(
            f"{d}: the normaliser and unnormaliser disagree on the ACTION normalisation "
            f"({action_norm} vs {ucfg.get('norm_map', {}).get('ACTION')})"
        )
    post_stats = _unflatten(_state(d, unnorm, str(post_path)))
    if action_key in post_stats:
        stats[action_key] = post_stats[action_key]
    return _Normalisation(stats, state_key, action_key, state_norm, action_norm)


def _read_plugin(
    d: Path, pre_steps: list[dict], post_steps: list[dict]
) -> tuple[Preprocessor, Postprocessor]:
    """Folders written through the `lerobot_policy_shallowpi` plugin (lerobot-train, `shallowpi to-lerobot`)."""
    step = next(s for s in pre_steps if s.get("registry_name") == PLUGIN_PRE)
    where = str(d / PREPROCESSOR_JSON)
    state = _state(d, step, where)
    if TOKENIZER_KEY not in state:
        raise ProcessorFormatError(f"{where}: the {PLUGIN_PRE} state file holds no tokenizer")
    config = ProcessorConfig.from_dict(step.get("config", {}).get("processor", {}))
    tok = tokenizer_from_bytes(state[TOKENIZER_KEY].numpy().tobytes())
    if any(s.get("registry_name") == "normalizer_processor" for s in pre_steps):
        # LeRobot's normaliser steps normalise (so lerobot-train's stats overrides reach them); the plugin's
        # step then only pads, prompts and tokenises
        if (config.state_norm, config.action_norm) != ("IDENTITY", "IDENTITY"):
            raise ProcessorFormatError(
                f"{where}: the {PLUGIN_PRE} step normalises ({config.state_norm} / {config.action_norm}) "
                "after the normalizer_processor step already has: inputs would be normalised twice"
            )
        norms = _normalisation(d, pre_steps, post_steps)
        if (norms.state_key, norms.action_key) != (config.state_key, config.action_key):
            raise ProcessorFormatError(
                f"{where}: the normalizer_processor step's features ({norms.state_key}, {norms.action_key}) "
                f"are not the ones the {PLUGIN_PRE} step reads ({config.state_key}, {config.action_key})"
            )
        config = dataclasses.replace(config, state_norm=norms.state_norm, action_norm=norms.action_norm)
        return Preprocessor(config, norms.stats, tok), Postprocessor(config, norms.stats)
    # the first plugin layout: stats inside the plugin's own steps' state files
    stats = _unflatten(state)
    post = next((s for s in post_steps if s.get("registry_name") == PLUGIN_POST), None)
    if post is not None:
        post_stats = _unflatten(_state(d, post, str(d / POSTPROCESSOR_JSON)))
        stats.update({k: v for k, v in post_stats.items() if k == config.action_key})
    return Preprocessor(config, stats, tok), Postprocessor(config, stats)


def describe(folder: str | Path) -> dict | None:
    """What `shallowpi inspect` shows about a folder's LeRobot processor files (no tokenizer needed)."""
    d = Path(folder)
    if not is_lerobot_layout(d):
        return None
    steps = _read_json(d / PREPROCESSOR_JSON)["steps"]
    names = [s.get("registry_name") or s.get("class") for s in steps]
    if PLUGIN_PRE in names:
        fmt = "lerobot_policy_shallowpi plugin"
    elif (d / "shallowpi_processor.json").is_file():
        fmt = "shallowpi"
    elif "relative_actions_processor" in names:
        fmt = "LeRobot 0.5+"
    else:
        fmt = "LeRobot 0.4.4"
    norm = next((s for s in steps if s.get("registry_name") == "normalizer_processor"), {})
    norm_map = norm.get("config", {}).get("norm_map")
    tok = next((s for s in steps if s.get("registry_name") == "tokenizer_processor"), {})
    tokenizer = tok.get("config", {}).get("tokenizer_file") or tok.get("config", {}).get("tokenizer_name")
    plugin = next((s for s in steps if s.get("registry_name") == PLUGIN_PRE), None)
    if plugin is not None and not norm:  # the first plugin layout: the step normalised
        proc = plugin.get("config", {}).get("processor", {})
        norm_map = {"STATE": proc.get("state_norm"), "ACTION": proc.get("action_norm")}
    if plugin is not None:
        tokenizer = "inside the step's state file"
    return {"format": fmt, "steps": names, "norm_map": norm_map, "tokenizer": tokenizer}
