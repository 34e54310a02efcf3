"""Translate between PiConfig and LeRobot 0.4.4's config.json (draccus dump of PI0Config / PI05Config).

LeRobot has no size fields; our sizes go in a "shallowpi" object:
{"vlm": {...}, "expert": {...}, "vision": {...}, "vocab_size": N, "layer_map": null | [ints]}, and for a
step-distilled student "sampling": {"num_steps": K, "time_grid": [1.0, ..., 0.0]} (its Euler time grid;
LeRobot's own num_inference_steps is K too, so LeRobot samples the same step count, uniformly).
Without it the standard LeRobot sizes apply (gemma_2b + gemma_300m + SigLIP So400m/14).
LeRobot fields we do not model (features, normalisation mapping, optimizer presets...) are kept verbatim in
`PiConfig.lerobot` and written back, so a config survives a round trip.
"""

from __future__ import annotations

from shallowpi.errors import UserError
from shallowpi.model.config import (
    GemmaConfig,
    PiConfig,
    SiglipConfig,
    check_time_grid,
    gemma_2b,
    gemma_300m,
)

_GEMMA_VARIANTS = {"gemma_2b": gemma_2b, "gemma_300m": gemma_300m}
_GEMMA_KEYS = ("width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim")
_VISION_KEYS = ("image_size", "patch_size", "width", "depth", "mlp_dim", "num_heads")
# LeRobot field -> PiConfig field, copied as is
_SCALARS = {
    "chunk_size": "chunk_size",
    "max_state_dim": "max_state_dim",
    "max_action_dim": "max_action_dim",
    "num_inference_steps": "num_inference_steps",
    "tokenizer_max_length": "tokenizer_max_length",
    "min_period": "min_period",
    "max_period": "max_period",
    "time_sampling_beta_alpha": "time_beta_alpha",
    "time_sampling_beta_beta": "time_beta_beta",
    "time_sampling_scale": "time_scale",
    "time_sampling_offset": "time_offset",
    "dtype": "dtype",
}


def _gemma(raw: dict | None, variant: str, where: str) -> GemmaConfig:
    if raw is None:
        if variant not in _GEMMA_VARIANTS:
            raise UserError(
                f"{where}: unknown Gemma variant {variant!r} (LeRobot knows gemma_2b, gemma_300m)"
            )
        return _GEMMA_VARIANTS[variant]()
    missing = [k for k in _GEMMA_KEYS if k not in raw]
    if missing:
        raise UserError(f"config.json shallowpi.{where} lacks {missing}")
    return GemmaConfig(**{k: int(raw[k]) for k in _GEMMA_KEYS})


# Fields LeRobot 0.5+ added to its π configs. Accepted as long as they ask for nothing shallowpi lacks.
# use_relative_actions=true changes what the model predicts (action - state): refused by name.
# relative_exclude_joints / action_feature_names only matter with it; rtc_training_max_delay only shapes
# training-time noise (real-time chunking), not the weights' inputs and outputs.
_NEWER_OK = ("relative_exclude_joints", "action_feature_names", "rtc_training_max_delay")
PLUGIN_TYPE = "shallowpi"  # config type of the lerobot_policy_shallowpi plugin (variant in "variant")


def _check_newer_fields(raw: dict) -> None:
    if raw.get("use_relative_actions"):
        raise UserError(
            "config.json: use_relative_actions=true (LeRobot 0.5+ relative actions: the model predicts "
            "action - state) is not supported by shallowpi; use a checkpoint trained with absolute actions"
        )
    for k, v in raw.items():
        if "memory" in k and k not in _NEWER_OK and v not in (None, False, 0, [], {}):
            raise UserError(
                f"config.json: {k}={v!r} (a LeRobot 0.5+ memory field) is not supported by shallowpi; "
                "it runs memory-less π0 / π0.5 policies only"
            )


def _sampling(raw: dict, ours: dict) -> dict:
    """shallowpi.sampling -> PiConfig kwargs (sampling_grid, num_inference_steps); one error if inconsistent."""
    sampling = ours.get("sampling")
    if sampling is None:
        return {}
    if not isinstance(sampling, dict) or "time_grid" not in sampling:
        raise UserError(
            f"config.json shallowpi.sampling must be {{'num_steps', 'time_grid'}}, got {sampling!r}"
        )
    try:
        grid = check_time_grid(sampling["time_grid"])
    except ValueError as e:
        raise UserError(f"config.json shallowpi.sampling.time_grid: {e}") from e
    steps = sampling.get("num_steps", len(grid) - 1)
    lerobot_steps = raw.get("num_inference_steps", steps)
    if steps != len(grid) - 1 or lerobot_steps != steps:
        raise UserError(
            f"config.json: shallowpi.sampling has num_steps {steps} and a {len(grid) - 1}-step time_grid, "
            f"num_inference_steps is {lerobot_steps}; all three must agree (the model samples on that "
            "time_grid; without shallowpi.sampling, on num_inference_steps uniform steps)"
        )
    return {"sampling_grid": grid, "num_inference_steps": len(grid) - 1}


def config_from_lerobot(raw: dict) -> PiConfig:
    kind = raw.get("type")
    if kind == PLUGIN_TYPE:
        kind = raw.get("variant", "pi05")
        if kind not in ("pi0", "pi05"):
            raise UserError(f"config.json (type shallowpi): 'variant' must be 'pi0' or 'pi05', got {kind!r}")
        if not isinstance(raw.get("shallowpi"), dict):
            raise UserError("config.json (type shallowpi) lacks its 'shallowpi' sizes object")
    elif kind not in ("pi0", "pi05"):
        raise UserError(f"config.json 'type' must be 'pi0', 'pi05' or 'shallowpi', got {kind!r}")
    _check_newer_fields(raw)
    ours = raw.get("shallowpi") or {}
    res = raw.get("image_resolution", [224, 224])
    if res[0] != res[1]:
        raise UserError(f"only square image_resolution is supported, got {res}")
    if "vision" in ours:
        v = ours["vision"]
        missing = [k for k in _VISION_KEYS if k not in v]
        if missing:
            raise UserError(f"config.json shallowpi.vision lacks {missing}")
        vision = SiglipConfig(**{k: int(v[k]) for k in _VISION_KEYS}, merge=int(v.get("merge", 1)))
    else:
        vision = SiglipConfig(image_size=int(res[0]))
    feats = raw.get("input_features") or {}
    if ours.get("cameras"):  # the plugin's model slots (its input_features are the dataset's cameras)
        cameras = [str(c) for c in ours["cameras"]]
    else:
        cameras = [k for k, f in feats.items() if f.get("type") == "VISUAL"]
        cameras += [f"observation.images.empty_camera_{i}" for i in range(int(raw.get("empty_cameras", 0)))]
    kwargs = {ours_k: raw[k] for k, ours_k in _SCALARS.items() if k in raw} | _sampling(raw, ours)
    cfg = PiConfig(
        variant=kind,
        vlm=_gemma(ours.get("vlm"), raw.get("paligemma_variant", "gemma_2b"), "vlm"),
        expert=_gemma(ours.get("expert"), raw.get("action_expert_variant", "gemma_300m"), "expert"),
        vision=vision,
        vocab_size=int(ours.get("vocab_size", 257152)),
        cameras=tuple(cameras) if cameras else PiConfig().cameras,
        layer_map=ours.get("layer_map"),
        vlm_layer_map=ours.get("vlm_layer_map"),
        vision_layer_map=ours.get("vision_layer_map"),
        lerobot={
            k: v for k, v in raw.items() if k not in _SCALARS and k not in ("type", "shallowpi", "variant")
        },
        **kwargs,
    )
    return cfg


def config_to_lerobot(cfg: PiConfig, overrides: dict | None = None) -> dict:
    """A config.json LeRobot 0.4.4 would write for this policy, plus our "shallowpi" object."""
    size = cfg.vision.image_size
    pi0 = cfg.variant == "pi0"
    out: dict = {
        "type": cfg.variant,
        "n_obs_steps": 1,
        "input_features": {cam: {"type": "VISUAL", "shape": [3, size, size]} for cam in cfg.cameras}
        | {"observation.state": {"type": "STATE", "shape": [cfg.max_state_dim]}},
        "output_features": {"action": {"type": "ACTION", "shape": [cfg.max_action_dim]}},
        "device": "cpu",
        "use_amp": False,
        "use_peft": False,
        "push_to_hub": False,
        "repo_id": None,
        "private": None,
        "tags": None,
        "license": None,
        "pretrained_path": None,
        "paligemma_variant": "gemma_2b",
        "action_expert_variant": "gemma_300m",
        "n_action_steps": cfg.chunk_size,
        "rtc_config": None,
        "image_resolution": [size, size],
        "empty_cameras": 0,
        "normalization_mapping": {
            "VISUAL": "IDENTITY",
            "STATE": "MEAN_STD" if pi0 else "QUANTILES",
            "ACTION": "MEAN_STD" if pi0 else "QUANTILES",
        },
        "gradient_checkpointing": False,
        "compile_model": False,
        "compile_mode": "max-autotune",
        "freeze_vision_encoder": False,
        "train_expert_only": False,
        "optimizer_lr": 2.5e-05,
        "optimizer_betas": [0.9, 0.95],
        "optimizer_eps": 1e-08,
        "optimizer_weight_decay": 0.01,
        "optimizer_grad_clip_norm": 1.0,
        "scheduler_warmup_steps": 1000,
        "scheduler_decay_steps": 30000,
        "scheduler_decay_lr": 2.5e-06,
    }
    out.update(cfg.lerobot)  # what was loaded from a LeRobot config wins over our defaults
    # Camera slots are ours to state: features of the kept slots in order, no empty_cameras indirection.
    kept = {k: v for k, v in (out.get("input_features") or {}).items() if v.get("type") != "VISUAL"}
    out["input_features"] = {cam: {"type": "VISUAL", "shape": [3, size, size]} for cam in cfg.cameras} | kept
    out["empty_cameras"] = 0
    out["image_resolution"] = [size, size]
    for k, ours_k in _SCALARS.items():
        out[k] = getattr(cfg, ours_k)
    if overrides:
        out.update(overrides)
    out["shallowpi"] = {
        "vlm": {k: getattr(cfg.vlm, k) for k in _GEMMA_KEYS},
        "expert": {k: getattr(cfg.expert, k) for k in _GEMMA_KEYS},
        "vision": {k: getattr(cfg.vision, k) for k in _VISION_KEYS},
        "vocab_size": cfg.vocab_size,
        "layer_map": list(cfg.layer_map) if cfg.layer_map is not None else None,
    }
    add_prefix_fields(out["shallowpi"], cfg)
    if cfg.vlm_layer_map is not None:  # written only when the stacks differ: older readers stay valid
        out["shallowpi"]["vlm_layer_map"] = list(cfg.vlm_layer_map)
    if cfg.sampling_grid is not None:
        out["num_inference_steps"] = len(cfg.sampling_grid) - 1
    add_sampling_fields(out["shallowpi"], cfg)
    return out


def add_sampling_fields(shallowpi: dict, cfg: PiConfig) -> dict:
    """A step-distilled student's time grid into a config.json's "shallowpi" object, written only when
    recorded; the config's num_inference_steps must be its step count (`_sampling` checks when read)."""
    if cfg.sampling_grid is not None:
        shallowpi["sampling"] = {
            "num_steps": len(cfg.sampling_grid) - 1,
            "time_grid": list(cfg.sampling_grid),
        }
    return shallowpi


def add_prefix_fields(shallowpi: dict, cfg: PiConfig) -> dict:
    """A compressed prefix into a config.json's "shallowpi" object (which has its "vision" sizes): the merge
    and the vision layer map, each written only when set (older readers stay valid for other models)."""
    if cfg.vision.merge != 1:  # an older reader ignores it, then fails strictly on the projector's shape
        shallowpi["vision"]["merge"] = cfg.vision.merge
    if cfg.vision_layer_map is not None:
        shallowpi["vision_layer_map"] = list(cfg.vision_layer_map)
    return shallowpi
