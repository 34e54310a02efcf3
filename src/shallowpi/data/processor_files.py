"""A processor's files in a pretrained folder: `save_processor` writes them (LeRobot's processor layout plus
shallowpi's own config and tokenizer), `read_shallowpi_processor` reads them back; the flat statistics keys
LeRobot's files share (`lerobot_processor`)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from shallowpi.atomic import write_atomic, write_json_atomic
from shallowpi.data import transforms
from shallowpi.data.processor import Postprocessor, Preprocessor, ProcessorConfig
from shallowpi.data.stats import Stats
from shallowpi.data.tokenizer import Tokenizer
from shallowpi.errors import MissingFileError, UserError
from shallowpi.jsonfile import read_json

PROCESSOR_CONFIG = "shallowpi_processor.json"
TOKENIZER_FILE = "tokenizer.model"
PREPROCESSOR_JSON = "policy_preprocessor.json"
POSTPROCESSOR_JSON = "policy_postprocessor.json"


def flatten_stats(stats: Mapping[str, Mapping]) -> dict[str, torch.Tensor]:
    """{feature: {stat: [D]}} -> {"feature.stat": float32 [D]}, the keys of LeRobot's normaliser state files
    ("count" is not stored)."""
    return {
        f"{feat}.{name}": torch.as_tensor(np.asarray(v, dtype=np.float32)).reshape(-1).contiguous()
        for feat, d in stats.items()
        for name, v in (d or {}).items()
        if name != "count"
    }


def unflatten_stats(flat: Mapping[str, torch.Tensor], skip: Collection[str] = ()) -> Stats:
    """{"feature.stat": [D]} -> {feature: {stat: float64 [D]}}; keys in `skip` are not statistics."""
    out: Stats = {}
    for key, v in flat.items():
        if key in skip:
            continue
        feat, name = key.rsplit(".", 1)
        out.setdefault(feat, {})[name] = v.double().numpy().reshape(-1).astype(np.float64)
    return out


def _norm_step(config: ProcessorConfig, state_file: str, registry_name: str, output_only: bool) -> dict:
    feats = {config.action_key: {"type": "ACTION", "shape": [config.action_dim]}}
    if not output_only:
        feats = {config.state_key: {"type": "STATE", "shape": [config.state_dim]}, **feats}
    return {
        "registry_name": registry_name,
        "config": {
            "eps": transforms.EPS,
            "features": feats,
            "norm_map": {"VISUAL": "IDENTITY", "STATE": config.state_norm, "ACTION": config.action_norm},
        },
        "state_file": state_file,
    }


def save_processor(
    directory: str | Path, config: ProcessorConfig, stats: Stats, tokenizer: Tokenizer
) -> None:
    """Write the processors into a LeRobot `pretrained_model` folder (files replaced atomically).

    LeRobot-style: policy_preprocessor.json + policy_preprocessor_step_<i>_normalizer_processor.safetensors and
    policy_postprocessor.json + policy_postprocessor_step_0_unnormalizer_processor.safetensors (stats as flat
    keys `observation.state.mean`, `action.q01`, ...); ours: shallowpi_processor.json and tokenizer.model.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    pre = Preprocessor(config, stats, tokenizer)  # validates config + stats together
    config = dataclasses.replace(config, state_dim=pre.state_dim, action_dim=pre.action_dim)
    norm_stats = flatten_stats({config.state_key: pre.state_stats, config.action_key: pre.action_stats})
    post_stats = flatten_stats({config.action_key: pre.action_stats})
    tok_step = {
        "registry_name": "tokenizer_processor",
        "config": {
            "max_length": config.tokenizer_max_length,
            "padding_side": "right",
            "padding": "max_length",
            "truncation": True,
            "tokenizer_file": TOKENIZER_FILE,
        },
    }
    if config.variant == "pi05":  # LeRobot's pi05 order: normalise, then put the state into the prompt
        steps = [
            {"registry_name": "rename_observations_processor", "config": {"rename_map": config.camera_map}},
            {"registry_name": "to_batch_processor", "config": {}},
            None,
            {
                "registry_name": "pi05_prepare_state_tokenizer_processor_step",
                "config": {"max_state_dim": config.max_state_dim, "pad_state": config.pad_state_in_prompt},
            },
            tok_step,
            {"registry_name": "device_processor", "config": {}},
        ]
        norm_index = 2
    else:  # LeRobot's pi0 order: newline, tokenizer, device, then normalise
        steps = [
            {"registry_name": "rename_observations_processor", "config": {"rename_map": config.camera_map}},
            {"registry_name": "to_batch_processor", "config": {}},
            {"registry_name": "pi0_new_line_processor", "config": {}},
            tok_step,
            {"registry_name": "device_processor", "config": {}},
            None,
        ]
        norm_index = 5
    pre_file = f"policy_preprocessor_step_{norm_index}_normalizer_processor.safetensors"
    steps[norm_index] = _norm_step(config, pre_file, "normalizer_processor", output_only=False)
    post_file = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
    post_steps = [
        _norm_step(config, post_file, "unnormalizer_processor", output_only=True),
        {"registry_name": "device_processor", "config": {"device": "cpu"}},
    ]

    write_atomic(d / pre_file, lambda p: save_file(norm_stats, p))
    write_atomic(d / post_file, lambda p: save_file(post_stats, p))
    write_atomic(d / TOKENIZER_FILE, lambda p: shutil.copyfile(tokenizer.path, p))
    write_json_atomic(d / PREPROCESSOR_JSON, {"name": "policy_preprocessor", "steps": steps}, indent=2)
    write_json_atomic(d / POSTPROCESSOR_JSON, {"name": "policy_postprocessor", "steps": post_steps}, indent=2)
    # Written last: its presence marks a complete save.
    write_json_atomic(
        d / PROCESSOR_CONFIG,
        {"config": config.to_dict(), "tokenizer_file": TOKENIZER_FILE, "normalizer_file": pre_file},
        indent=2,
    )


def has_processor(directory: str | Path) -> bool:
    """Whether `directory` carries a processor: shallowpi's own files or LeRobot's policy_preprocessor.json."""
    d = Path(directory)
    return (d / PROCESSOR_CONFIG).is_file() or (d / PREPROCESSOR_JSON).is_file()


def read_shallowpi_processor(directory: str | Path) -> tuple[Preprocessor, Postprocessor]:
    """The processors `save_processor` wrote into `directory`. A folder with LeRobot's processor files only
    needs the model's config.json as well: `shallowpi.pretrained.load_processor` reads either layout."""
    d = Path(directory)
    path = d / PROCESSOR_CONFIG
    if not path.is_file():
        if (d / PREPROCESSOR_JSON).is_file():
            raise MissingFileError(
                f"no {PROCESSOR_CONFIG} in {d}, only LeRobot's {PREPROCESSOR_JSON}: read it with "
                "shallowpi.pretrained.load_processor (it needs the folder's config.json)"
            )
        raise MissingFileError(
            f"no processor in {d}: neither {PROCESSOR_CONFIG} (shallowpi) nor {PREPROCESSOR_JSON} (LeRobot)"
        )
    meta = read_json(path)
    config = ProcessorConfig.from_dict(meta["config"])
    for name in (meta["normalizer_file"], meta["tokenizer_file"]):
        if not (d / name).is_file():
            raise MissingFileError(f"processor file missing: {d / name}")
    stats = unflatten_stats(load_file(str(d / meta["normalizer_file"])))
    tokenizer = Tokenizer(d / meta["tokenizer_file"])
    pre = Preprocessor(config, stats, tokenizer)
    return pre, Postprocessor(config, _postprocessor_stats(d, pre))


def _postprocessor_stats(d: Path, pre: Preprocessor) -> Stats:
    """The unnormaliser's own statistics file (what LeRobot reads), checked equal to the preprocessor's
    action statistics: two copies that disagree would unnormalise with numbers training never saw."""
    path = d / POSTPROCESSOR_JSON
    if not path.is_file():
        raise MissingFileError(f"processor file missing: {path}")
    steps = read_json(path).get("steps", [])
    files = [
        s["state_file"]
        for s in steps
        if s.get("registry_name") == "unnormalizer_processor" and "state_file" in s
    ]
    if len(files) != 1 or not (d / files[0]).is_file():
        raise MissingFileError(f"{path} names no unnormalizer statistics file that exists in {d}")
    post = unflatten_stats(load_file(str(d / files[0])))
    key = pre.config.action_key
    ours = {k: v.numpy() for k, v in pre.action_stats.items()}
    theirs = {k: np.asarray(v, dtype=np.float32).reshape(-1) for k, v in post.get(key, {}).items()}
    for name in sorted(set(ours) | set(theirs)):
        if name not in theirs or name not in ours or not np.array_equal(ours[name], theirs[name]):
            raise UserError(
                f"the postprocessor's statistic {key}.{name} ({files[0]}) differs from the preprocessor's "
                f"(or one lacks it): the two statistics files of {d} must agree"
            )
    return post
