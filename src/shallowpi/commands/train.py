"""`shallowpi train`: flow-matching (task loss only) training, from a preset or from a checkpoint.

shallowpi train --preset tiny --variant pi05 --depth 4 --dataset DATA --steps 20000 --out OUT
shallowpi train --init CHECKPOINT_DIR --dataset DATA --steps 2000 --out OUT     # fine-tune
"""

from __future__ import annotations

import argparse

from shallowpi.commands.options import positive_int
from shallowpi.commands.training_args import add_training_arguments
from shallowpi.errors import UserError

# also a Hugging Face hub id org/name[@revision] (cli.resolve_hub_ids)
HUB_IDS = {"init": "policy", "dataset": "dataset"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--preset", help="new model from a config preset: testbed, testbed_fine, tiny, mid, pi0, pi05"
    )
    src.add_argument("--init", help="start from this pretrained_model folder (fine-tuning)")
    p.add_argument(
        "--dataset-stats",
        action="store_true",
        help="with --init: normalise with the dataset's stats and state/action dims (keep cameras, tokenizer, prompt)",
    )
    p.add_argument("--variant", choices=("pi0", "pi05"), default=None, help="with --preset")
    p.add_argument("--depth", type=positive_int, default=None, help="with --preset: layers in both stacks")
    add_training_arguments(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from shallowpi.commands.training_args import (
        check_training_args,
        make_source,
        setup_threads,
        train_config,
    )
    from shallowpi.distill.losses import DistillLossConfig, LossWeights
    from shallowpi.distill.trainer import train
    from shallowpi.model import PiModel, load_model, preset
    from shallowpi.paths import portable_path

    if args.dataset_stats and not args.init:
        raise UserError("--dataset-stats goes with --init (a new model takes the dataset's stats anyway)")
    if args.init and (args.variant is not None or args.depth is not None):
        raise UserError("--variant / --depth go with --preset (a model from --init keeps its own)")
    check_training_args(args)
    cfg = train_config(args)
    setup_threads(args)
    if args.init:
        model = load_model(args.init, dtype="float32")
        processor_dir = args.init
    else:
        overrides = {k: v for k, v in (("variant", args.variant), ("depth", args.depth)) if v is not None}
        torch.manual_seed(args.seed)  # the initial weights are part of the run
        model = PiModel(preset(args.preset, **overrides))
        processor_dir = None
    source, write_extra = make_source(args, model.config, processor_dir=processor_dir)
    loss_cfg = DistillLossConfig(weights=LossWeights(task=1.0, kd=0.0, attn=0.0))
    final = train(
        model,
        source,
        cfg,
        loss_cfg,
        resume=args.resume,
        write_extra=write_extra,
        run_info={
            "command": "train",
            "init": portable_path(args.init),
            "preset": args.preset,
            "dataset": portable_path(args.dataset),
        },
    )
    print(f"model saved in {final}")
    return 0
