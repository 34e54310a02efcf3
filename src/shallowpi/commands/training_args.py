"""Flags `shallowpi train` and `shallowpi distill` share, and what they become: TrainConfig, a source."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from shallowpi.commands.options import (
    DATA_WORKERS_HELP,
    add_device_argument,
    camera_map,
    check_device,
    check_input_file,
    check_out_folder,
    nonnegative_int,
    positive_int,
)
from shallowpi.distill import checkpointing as ckpt
from shallowpi.distill.data import SyntheticSource
from shallowpi.distill.schedule import ScheduleConfig
from shallowpi.distill.trainer import TrainConfig
from shallowpi.errors import MissingFileError, UserError
from shallowpi.model import PiConfig

SYNTHETIC = "synthetic:"


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """Defaults come from TrainConfig / ScheduleConfig (one source; `--no-X` flags turn off a True field)."""
    t, s = TrainConfig, ScheduleConfig
    p.add_argument(
        "--dataset",
        required=True,
        help="LeRobotDataset folder (v3.0 / v2.1), or synthetic:N for N random examples (smoke tests)",
    )
    p.add_argument("--out", required=True, help="output folder (checkpoints/, metrics.jsonl)")
    p.add_argument("--steps", type=int, required=True, help="optimizer steps")
    p.add_argument(
        "--batch-size", type=int, default=t.batch_size, help="GLOBAL batch per optimizer step (all GPUs)"
    )
    p.add_argument("--grad-accum", type=int, default=t.grad_accum, help="gradient accumulation steps")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/checkpoints/last")
    p.add_argument("--seed", type=nonnegative_int, default=t.seed)
    p.add_argument("--lr", type=float, default=s.peak_lr, help="peak learning rate")
    p.add_argument("--end-lr", type=float, default=s.end_lr)
    p.add_argument("--warmup-steps", type=int, default=s.warmup_steps)
    p.add_argument("--decay-steps", type=int, default=s.decay_steps, help="cosine end (default: --steps)")
    p.add_argument("--weight-decay", type=float, default=t.weight_decay)
    p.add_argument("--clip-grad-norm", type=float, default=t.clip_grad_norm)
    p.add_argument("--save-every", type=int, default=t.save_every)
    p.add_argument("--log-every", type=int, default=t.log_every)
    p.add_argument("--no-bf16", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--freeze-vision", action="store_true", help="do not train the vision tower")
    p.add_argument("--fsdp", action="store_true", help="FSDP2 (fully_shard) instead of DDP under torchrun")
    p.add_argument("--num-workers", type=int, default=t.num_workers, help=DATA_WORKERS_HELP)
    p.add_argument("--tensorboard", action="store_true", help="also log to OUT/tensorboard (if installed)")
    p.add_argument("--no-progress", action="store_true")
    add_device_argument(p)
    p.add_argument("--tokenizer", default=None, help="SentencePiece model (default: shipped test-bed one)")
    p.add_argument(
        "--camera-map",
        type=camera_map,
        default=None,
        help="dataset camera -> model slot, e.g. observation.images.image=observation.images.base_0_rgb,...",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (fixed for reproducible CPU runs)",
    )
    p.add_argument(
        "--truncate-prompt",
        action="store_true",
        help="cut prompts longer than the model reads (pi05: the task text, never the state) instead of "
        "failing; saved with the model's processor",
    )


def check_training_args(args: argparse.Namespace) -> None:
    """What train and distill can check before loading a model: the device, the paths, --resume / --fsdp, the
    dataset's name (the numbers are checked by TrainConfig / ScheduleConfig, built next)."""
    check_device(args.device)
    check_out_folder(args.out)
    check_input_file(args.tokenizer, "--tokenizer")
    # the trainer refuses these too, but only after the models are built (a full-size teacher takes a while)
    if args.resume and ckpt.last_checkpoint(args.out) is None:
        raise MissingFileError(f"--resume: no checkpoint in {Path(args.out) / ckpt.CHECKPOINTS}")
    if args.fsdp and int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # the CLI never joins a group itself
        raise UserError("--fsdp needs several processes (launch with torchrun)")
    if args.dataset.startswith(SYNTHETIC):
        n = args.dataset[len(SYNTHETIC) :]
        if not n.isdigit():
            raise UserError(f"--dataset {args.dataset}: expected synthetic:N with N a number of examples")
    elif not os.path.isdir(args.dataset):
        raise MissingFileError(f"--dataset {args.dataset}: no such folder")


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        output_dir=args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        seed=args.seed,
        schedule=ScheduleConfig(
            peak_lr=args.lr, warmup_steps=args.warmup_steps, decay_steps=args.decay_steps, end_lr=args.end_lr
        ),
        weight_decay=args.weight_decay,
        clip_grad_norm=args.clip_grad_norm,
        save_every=args.save_every,
        log_every=args.log_every,
        bf16=not args.no_bf16,
        gradient_checkpointing=args.gradient_checkpointing,
        freeze_vision=args.freeze_vision,
        fsdp=args.fsdp,
        num_workers=args.num_workers,
        tensorboard=args.tensorboard,
        progress=not args.no_progress,
        device=args.device,
    )


def setup_threads(args: argparse.Namespace) -> None:
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)


def make_source(args: argparse.Namespace, config: PiConfig, processor_dir: str | Path | None):
    """-> (example source, write_extra for saved models or None); `check_training_args` ran first."""
    if args.dataset.startswith(SYNTHETIC):
        n = int(args.dataset[len(SYNTHETIC) :])
        return SyntheticSource(config, num_samples=n, seed=args.seed), None
    from shallowpi.distill.source import dataset_source

    source = dataset_source(
        args.dataset,
        config,
        processor=processor_dir,
        tokenizer=args.tokenizer,
        camera_map=args.camera_map,  # parsed by options.camera_map
        dataset_stats=getattr(args, "dataset_stats", False),
        truncate_prompt=getattr(args, "truncate_prompt", False),
    )
    return source, source.save_processor
