"""`shallowpi inspect --policy PATH`: what a checkpoint holds, without running it."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from safetensors import safe_open

from shallowpi.commands.options import add_old_positional, require
from shallowpi.data.lerobot_processor import describe
from shallowpi.model.checkpoint import WEIGHTS_NAME, validate_checkpoint

# also a Hugging Face hub id org/name[@revision] (cli.resolve_hub_ids)
HUB_IDS = {"policy": "policy"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default=None, help="pretrained folder (config.json + model.safetensors)")
    add_old_positional(parser, "policy")  # `inspect PATH`, the spelling before --policy
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of text")


def _group(key: str, untied: bool = False) -> str:
    """The component a key belongs to; `untied`: the folder holds embed_tokens and lm_head both (LeRobot
    0.6), so the lm_head is a tensor of its own that π models never use."""
    key = key.removeprefix("model.")
    if untied and "paligemma.lm_head" in key:
        return "lm_head (unused)"
    for marker, name in (
        ("vision_tower", "vision"),
        ("multi_modal_projector", "projector"),
        ("language_model.embed_tokens", "embedding"),
        ("paligemma.lm_head", "embedding (tied lm_head)"),
        ("language_model", "backbone"),
        ("gemma_expert.lm_head", "expert lm_head (unused)"),
        ("gemma_expert", "expert"),
    ):
        if marker in key:
            return name
    return "projections"


def summarise(path: Path) -> dict:
    """What the checkpoint holds, after the checks `load_model` makes (a bad checkpoint raises UserError)."""
    cfg = validate_checkpoint(path)
    weights = path / WEIGHTS_NAME
    params: Counter[str] = Counter()
    dtypes: Counter[str] = Counter()
    n_keys = 0
    if weights.is_file():
        with safe_open(str(weights), framework="pt") as f:
            keys = list(f.keys())  # noqa: SIM118 (safe_open is not a dict)
            untied = {_group(k) for k in keys} >= {"embedding", "embedding (tied lm_head)"}
            for key in keys:
                sl = f.get_slice(key)
                numel = 1
                for s in sl.get_shape():
                    numel *= s
                params[_group(key, untied)] += numel
                dtypes[str(sl.get_dtype())] += 1
                n_keys += 1
    return {
        "path": str(path),
        "variant": cfg.variant,
        "depth": {"backbone": cfg.vlm.depth, "expert": cfg.expert.depth},
        "layer_map": cfg.layer_map,
        "vlm_layer_map": cfg.vlm_layer_map,
        "sizes": {
            "backbone": f"width {cfg.vlm.width}, mlp {cfg.vlm.mlp_dim}",
            "expert": f"width {cfg.expert.width}, mlp {cfg.expert.mlp_dim}",
            "heads": f"{cfg.vlm.num_heads} q / {cfg.vlm.num_kv_heads} kv x {cfg.vlm.head_dim}",
            "vision": f"{cfg.vision.image_size}px/{cfg.vision.patch_size}, width {cfg.vision.width}, "
            f"depth {cfg.vision.depth}",
        },
        "image_tokens": {  # per camera: SigLIP's patch tokens, and those reaching the backbone
            "siglip": cfg.vision.num_patches,
            "backbone": cfg.vision.num_tokens,
            "merge": cfg.vision.merge,
        },
        "vision_depth": cfg.vision.depth,
        "vision_layer_map": cfg.vision_layer_map,
        "cameras": list(cfg.cameras),
        "chunk_size": cfg.chunk_size,
        "dtype": cfg.dtype,
        "parameters": dict(params) | {"total": sum(params.values())},
        "processor": describe(path),
        "keys": {"count": n_keys, "dtypes": dict(dtypes)},
    }


def run(args: argparse.Namespace) -> int:
    info = summarise(Path(require(args, "policy")))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(
        f"{info['path']}: {info['variant']}, depth {info['depth']['backbone']} (backbone) / "
        f"{info['depth']['expert']} (expert), dtype {info['dtype']}"
    )
    print(f"  layer map: {info['layer_map'] if info['layer_map'] is not None else 'none (teacher)'}")
    if info["vlm_layer_map"] is not None:
        print(f"  backbone layer map: {info['vlm_layer_map']} (the expert's is the layer map)")
    for k, v in info["sizes"].items():
        print(f"  {k:9s} {v}")
    tok, m = info["image_tokens"], info["image_tokens"]["merge"]
    merged = f" (merged {m}x{m})" if m != 1 else ""
    print(
        f"  image tokens per camera: {tok['siglip']} from SigLIP, {tok['backbone']} to the backbone{merged}"
    )
    vmap = info["vision_layer_map"]
    print(
        f"  vision tower: {info['vision_depth']} layers, "
        + (f"teacher layers {vmap}" if vmap is not None else "not subsampled")
    )
    print(f"  cameras   {', '.join(info['cameras'])}; chunk {info['chunk_size']}")
    proc = info["processor"]
    if proc is not None:
        print(
            f"  processor {proc['format']}: norm {proc['norm_map']}, tokenizer {proc['tokenizer']}; "
            f"steps {', '.join(map(str, proc['steps']))}"
        )
    print("  parameters:")
    for k, v in sorted(info["parameters"].items(), key=lambda kv: -kv[1]):
        print(f"    {k:26s} {v:>14,}")
    print(
        f"  keys: {info['keys']['count']} ({', '.join(f'{n} {d}' for d, n in info['keys']['dtypes'].items())})"
    )
    return 0
