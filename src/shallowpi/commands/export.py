"""`shallowpi export`: a pretrained policy -> static-shape ONNX graphs + manifest, for onnxruntime / TensorRT.

shallowpi export --policy out/l6/checkpoints/last/pretrained_model --format onnx --out deploy/l6
shallowpi export --policy P --format onnx --out DIR --dtype float16 --batch-size 1
shallowpi serve --backend onnxruntime --policy deploy/l6        # no torch needed on the robot
"""

from __future__ import annotations

import argparse
import time

from shallowpi.commands.options import add_num_steps_argument

# also a Hugging Face hub id org/name[@revision] (cli.resolve_hub_ids)
HUB_IDS = {"policy": "policy"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True, help="pretrained folder (config.json + model.safetensors)")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    parser.add_argument("--out", required=True, help="output folder (written atomically)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--batch-size", type=int, default=1, help="static batch size of the graphs")
    parser.add_argument(
        "--prompt-length", type=int, default=None, help="static prompt length (default: the processor's)"
    )
    parser.add_argument(
        "--cameras",
        default=None,
        help="comma-separated model slots the graphs take (default: the slots the processor feeds; "
        "the others are dropped as always masked)",
    )
    add_num_steps_argument(
        parser, help="Euler denoising steps recorded in the manifest (default: the model config's)"
    )
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset")
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="PaliGemma SentencePiece tokenizer.model for LeRobot folders that ship none "
        "(default: the local Hugging Face cache)",
    )


def run(args: argparse.Namespace) -> int:
    from shallowpi.export.onnx_export import ExportOptions, export_policy  # imports torch + onnx

    opts = ExportOptions(
        dtype=args.dtype,
        batch_size=args.batch_size,
        prompt_length=args.prompt_length,
        cameras=tuple(s.strip() for s in args.cameras.split(",") if s.strip()) if args.cameras else None,
        num_steps=args.num_steps,
        opset=args.opset,
    )
    start = time.monotonic()
    out = export_policy(args.policy, args.out, opts, tokenizer=args.tokenizer)
    print(f"shallowpi export: wrote {out} ({time.monotonic() - start:.1f} s)")
    return 0
