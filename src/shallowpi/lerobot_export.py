"""A shallowpi policy folder -> a folder LeRobot loads with the `lerobot_policy_shallowpi` plugin.

Why a conversion and not the folder as it is: a shallowpi folder says `"type": "pi05"` (or pi0), which
LeRobot routes to its own PI05Policy (18 layers hard-coded, patched transformers), and its tokenizer step
names a local file LeRobot's TokenizerProcessorStep cannot take. The exported folder is what the plugin's
own `save_pretrained` writes (and what `lerobot-train --policy.type=shallowpi` saves), so shallowpi reads it
back through the same path:

    config.json              "type": "shallowpi", "variant", the sizes / layer map / camera slots object
                             (+ a step-distilled student's time grid), input_features = the cameras and
                             state the processor reads (what the env or dataset gives), output_features =
                             the real action dim
    model.safetensors        unchanged (LeRobot key names)
    policy_preprocessor.json rename (empty) -> to_batch -> normalizer -> shallowpi_preprocessor -> device
      + ..._step_2_normalizer_processor.safetensors (state + action stats)
      + ..._step_3_shallowpi_preprocessor.safetensors (the tokenizer's bytes)
    policy_postprocessor.json unnormalizer -> device(cpu)
      + ..._step_0_unnormalizer_processor.safetensors (action stats)

The stats live in LeRobot's own normaliser steps, as in its π pipelines, so that `lerobot-train
--policy.path=<this folder>` can hand them the dataset's stats (its `normalizer_processor` /
`unnormalizer_processor` overrides) exactly as it does when fine-tuning its own π policies; the plugin's step
does the rest of shallowpi's processor (cameras, images, padding, prompt, tokens) and no normalisation.

No lerobot import here: the files are plain JSON + safetensors.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from safetensors.torch import save_file

from shallowpi.atomic import atomic_dir
from shallowpi.data.lerobot_processor import PLUGIN_PRE, TOKENIZER_KEY, tokenizer_bytes
from shallowpi.data.processor import Postprocessor, Preprocessor, ProcessorConfig
from shallowpi.data.processor_files import POSTPROCESSOR_JSON, PREPROCESSOR_JSON, flatten_stats
from shallowpi.data.processor_spec import EPS
from shallowpi.errors import OutputExistsError, UserError
from shallowpi.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME, validate_checkpoint
from shallowpi.model.config import PiConfig
from shallowpi.model.lerobot_config import PLUGIN_TYPE, add_prefix_fields, add_sampling_fields
from shallowpi.pretrained import load_processor

_GEMMA_KEYS = ("width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim")
_VISION_KEYS = ("image_size", "patch_size", "width", "depth", "mlp_dim", "num_heads")
NORM_STATE = "policy_preprocessor_step_2_normalizer_processor.safetensors"
PRE_STATE = f"policy_preprocessor_step_3_{PLUGIN_PRE}.safetensors"
UNNORM_STATE = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
# optimizer / scheduler fields a LeRobot π config carries over to the plugin's config as they are
_CARRY = (
    "optimizer_lr",
    "optimizer_betas",
    "optimizer_eps",
    "optimizer_weight_decay",
    "optimizer_grad_clip_norm",
    "scheduler_warmup_steps",
    "scheduler_decay_steps",
    "scheduler_decay_lr",
)


def plugin_features(pc: ProcessorConfig, image_size: int) -> tuple[dict, dict]:
    """(input_features, output_features) as config.json and LeRobot's normaliser steps write them: the
    cameras and state the processor reads, the real action dim."""
    inputs = {src: {"type": "VISUAL", "shape": [3, image_size, image_size]} for src in pc.camera_map}
    inputs[pc.state_key] = {"type": "STATE", "shape": [pc.state_dim]}
    return inputs, {pc.action_key: {"type": "ACTION", "shape": [pc.action_dim]}}


def plugin_config(cfg: PiConfig, pc: ProcessorConfig, n_action_steps: int) -> dict:
    """config.json of the plugin's `shallowpi` type for this model and processor (`pc` with its real state
    and action dims)."""
    size = cfg.vision.image_size
    inputs, outputs = plugin_features(pc, size)
    out = {
        "type": PLUGIN_TYPE,
        "variant": cfg.variant,
        "n_obs_steps": 1,
        "input_features": inputs,
        "output_features": outputs,
        "device": "cpu",
        "chunk_size": cfg.chunk_size,
        "n_action_steps": n_action_steps,
        "max_state_dim": cfg.max_state_dim,
        "max_action_dim": cfg.max_action_dim,
        "num_inference_steps": cfg.num_inference_steps,
        "tokenizer_max_length": cfg.tokenizer_max_length,
        "image_resolution": [size, size],
        "min_period": cfg.min_period,
        "max_period": cfg.max_period,
        "time_sampling_beta_alpha": cfg.time_beta_alpha,
        "time_sampling_beta_beta": cfg.time_beta_beta,
        "time_sampling_scale": cfg.time_scale,
        "time_sampling_offset": cfg.time_offset,
        "dtype": cfg.dtype,
        "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": pc.state_norm, "ACTION": pc.action_norm},
        "camera_map": dict(pc.camera_map),
        "pad_state_in_prompt": pc.pad_state_in_prompt,
        "shallowpi": {
            "vlm": {k: getattr(cfg.vlm, k) for k in _GEMMA_KEYS},
            "expert": {k: getattr(cfg.expert, k) for k in _GEMMA_KEYS},
            "vision": {k: getattr(cfg.vision, k) for k in _VISION_KEYS},
            "vocab_size": cfg.vocab_size,
            "layer_map": list(cfg.layer_map) if cfg.layer_map is not None else None,
            "cameras": list(cfg.cameras),
        },
    }
    if cfg.vlm_layer_map is not None:  # the backbone kept other teacher layers than the expert
        out["shallowpi"]["vlm_layer_map"] = list(cfg.vlm_layer_map)
    add_prefix_fields(out["shallowpi"], cfg)  # merged image tokens, a subsampled SigLIP tower
    # a step-distilled student's time grid: without it LeRobot samples its num_inference_steps uniformly
    add_sampling_fields(out["shallowpi"], cfg)
    out.update({k: cfg.lerobot[k] for k in _CARRY if k in cfg.lerobot})
    return out


def processor_files(pre: Preprocessor, post: Postprocessor) -> dict[str, object]:
    """name -> JSON dict or safetensors state, the plugin's pipeline layout (`pre.config` with its real
    state and action dims)."""
    pc = pre.config
    inputs, outputs = plugin_features(pc, pc.image_size)
    norm_map = {"VISUAL": "IDENTITY", "STATE": pc.state_norm, "ACTION": pc.action_norm}
    norm = {"eps": EPS, "features": inputs | outputs, "norm_map": norm_map}
    unnorm = {"eps": EPS, "features": outputs, "norm_map": norm_map}
    step = dataclasses.replace(pc, state_norm="IDENTITY", action_norm="IDENTITY").to_dict()  # normalised
    device = {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}}
    pre_json = {
        "name": "policy_preprocessor",
        "steps": [
            {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
            {"registry_name": "to_batch_processor", "config": {}},
            {"registry_name": "normalizer_processor", "config": norm, "state_file": NORM_STATE},
            {"registry_name": PLUGIN_PRE, "config": {"processor": step}, "state_file": PRE_STATE},
            device,
        ],
    }
    post_json = {
        "name": "policy_postprocessor",
        "steps": [
            {"registry_name": "unnormalizer_processor", "config": unnorm, "state_file": UNNORM_STATE},
            device,
        ],
    }
    return {
        PREPROCESSOR_JSON: pre_json,
        POSTPROCESSOR_JSON: post_json,
        NORM_STATE: flatten_stats({pc.state_key: pre.state_stats, pc.action_key: pre.action_stats}),
        PRE_STATE: {TOKENIZER_KEY: tokenizer_bytes(pre.tokenizer)},
        UNNORM_STATE: flatten_stats({pc.action_key: post.action_stats}),
    }


def export_lerobot(
    policy: str | Path,
    out: str | Path,
    *,
    camera_map: dict[str, str] | None = None,
    n_action_steps: int | None = None,
    tokenizer: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `out` (atomically: a temp folder, then rename). `camera_map` replaces the processor's map
    (input key -> model slot), e.g. {"observation.image": "observation.images.base_0_rgb"} to feed LeRobot's
    Meta-World env to a policy trained on shallowpi's corner4 renders."""
    src, dst = Path(policy), Path(out)
    if src.resolve() == dst.resolve():
        raise UserError("--out must differ from the policy folder")
    if dst.exists() and not overwrite:
        raise OutputExistsError(f"{dst} exists (pass --overwrite to replace it)")
    cfg = validate_checkpoint(src)  # what the plugin's load will check, refused here rather than there
    pre, post = load_processor(src, tokenizer=tokenizer)
    pc = pre.config
    if camera_map is not None:
        pc = dataclasses.replace(pc, camera_map=dict(camera_map))  # validated against the model's slots
    pc = dataclasses.replace(pc, state_dim=pre.state_dim, action_dim=pre.action_dim)
    pre, post = Preprocessor(pc, pre.raw_stats, pre.tokenizer), Postprocessor(pc, pre.raw_stats)
    steps = (
        n_action_steps
        if n_action_steps is not None
        else int(cfg.lerobot.get("n_action_steps") or cfg.chunk_size)
    )
    if not 1 <= steps <= cfg.chunk_size:
        raise UserError(f"n_action_steps {steps} must be in [1, chunk_size={cfg.chunk_size}]")
    config = plugin_config(cfg, pc, steps)

    with atomic_dir(dst) as tmp:
        shutil.copyfile(src / WEIGHTS_NAME, tmp / WEIGHTS_NAME)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=4) + "\n")
        for name, content in processor_files(pre, post).items():
            if name.endswith(".json"):
                (tmp / name).write_text(json.dumps(content, indent=2) + "\n")
            else:
                save_file(content, str(tmp / name))
    return dst
