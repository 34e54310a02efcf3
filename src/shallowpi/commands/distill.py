"""`shallowpi distill`: a shallow student from a teacher, trained with task + velocity KD + attention KD.

shallowpi distill --teacher TEACHER_DIR --dataset DATA --depth 6 --steps 30000 --batch-size 64 --out OUT
torchrun --nproc-per-node 8 -m shallowpi distill ...        # DDP (add --fsdp for FSDP2)

Prefix compression (docs/method.md §8): image tokens merged 2 x 2 and a 14-layer SigLIP tower, same run:
shallowpi distill --teacher TEACHER_DIR --dataset DATA --depth 6 --image-merge 2 --vision-layers 14 ...

Step distillation (docs/step-distillation.md): a K-step student whose steps match the frozen target's 10-step
solution, from a depth-distilled student (or straight from the teacher with --depth):
shallowpi distill --teacher TEACHER_DIR --student L6_DIR --num-steps 2 --dataset DATA --steps N --out OUT
"""

from __future__ import annotations

import argparse
import dataclasses

from shallowpi.commands.options import add_old_flag, flag_type, int_list, positive_int
from shallowpi.commands.training_args import add_training_arguments
from shallowpi.distill.losses import LossWeights, parse_attn_pairs
from shallowpi.distill.step_distill import StepDistillConfig
from shallowpi.errors import UserError

# also a Hugging Face hub id org/name[@revision] (cli.resolve_hub_ids)
HUB_IDS = {"teacher": "policy", "student": "policy", "dataset": "dataset"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, help="teacher pretrained_model folder (LeRobot layout)")
    p.add_argument(
        "--depth", type=positive_int, default=None, help="student depth (layer map round(linspace))"
    )
    p.add_argument(
        "--layers", type=int_list, default=None, help="explicit teacher layers, e.g. 0,3,7,10,14,17"
    )
    p.add_argument(
        "--backbone-layers",
        type=int_list,
        default=None,
        help="backbone's own teacher layers, e.g. 0,1,2,3,4,5 (the authors' released initialisation, a "
        "baseline); default: the same layers as the expert",
    )
    add_old_flag(p, "--vlm-layers", "backbone_layers", type=int_list)  # the spelling before --backbone-layers
    g = p.add_argument_group("prefix compression (fewer image tokens, a shallower vision tower)")
    g.add_argument(
        "--image-merge",
        type=positive_int,
        default=None,
        help="merge each M x M block of image patch tokens into one (M² fewer image tokens); M must divide "
        "the patch grid (default: the teacher's, 1)",
    )
    g.add_argument(
        "--vision-layers",
        type=positive_int,
        default=None,
        help="SigLIP layers the student keeps, subsampled round(linspace) like --depth (default: all)",
    )
    g.add_argument(
        "--vision-layer-map",
        type=int_list,
        default=None,
        help="explicit teacher SigLIP layers instead, e.g. 0,9,17,26",
    )
    p.add_argument(
        "--weights",
        type=flag_type(LossWeights.parse),
        default=None,
        help="loss weights, e.g. task=1,kd=1,attn=1 (default; attn=1 is a placeholder until the study tunes "
        "it), vision=1 (default 1 with fewer --vision-layers, else 0); not used by step distillation",
    )
    g = p.add_argument_group("step distillation (fewer denoising steps)")
    g.add_argument(
        "--num-steps",
        type=positive_int,
        default=None,
        help="distil a K-step student (uniform grid); its config.json records the schedule",
    )
    g.add_argument("--time-grid", default=None, help="explicit student grid instead, e.g. 1,0.6,0")
    g.add_argument(
        "--student",
        default=None,
        help="start from this (depth-distilled) pretrained folder instead of subsampling the teacher; "
        "--teacher is the frozen target (give the same folder to distil a model from its own 10 steps)",
    )
    g.add_argument(
        "--target-steps",
        type=positive_int,
        default=None,
        help="Euler steps of the target over [1, 0] (default: its config's, 10)",
    )
    g.add_argument(
        "--states",
        choices=("student", "target"),
        default=StepDistillConfig.states,
        help="start state of each interval: the student's own rollout (default) or the target's trajectory",
    )
    p.add_argument(
        "--attn-layers",
        type=flag_type(parse_attn_pairs),
        default=None,
        help="attention-KD (student:teacher) layer pairs, e.g. 3:10 (default: the middle student layer)",
    )
    add_training_arguments(p)


def run(args: argparse.Namespace) -> int:
    from shallowpi.commands.training_args import (
        check_training_args,
        make_source,
        setup_threads,
        train_config,
    )
    from shallowpi.distill.losses import DistillLossConfig, check_attn_pairs
    from shallowpi.distill.student import make_student
    from shallowpi.distill.trainer import train
    from shallowpi.model import load_model
    from shallowpi.paths import portable_path

    # Every flag is checked before the teacher is loaded (a full-size one takes a while).
    check_training_args(args)
    cfg = train_config(args)
    layers = args.layers  # parsed by options.int_list, like --backbone-layers
    grid = step_grid(args)
    if grid is None and args.student is not None:
        raise UserError("--student is for step distillation; add --num-steps K")
    if grid is None and args.target_steps is not None:
        raise UserError("--target-steps is for step distillation; add --num-steps K")
    if args.student is not None and (args.depth is not None or layers is not None or args.backbone_layers):
        raise UserError("give --student or --depth/--layers/--backbone-layers, not both")
    prefix_flags = {
        "--image-merge": args.image_merge,
        "--vision-layers": args.vision_layers,
        "--vision-layer-map": args.vision_layer_map,
    }
    given = [flag for flag, value in prefix_flags.items() if value is not None]
    if args.student is not None and given:
        raise UserError(f"{', '.join(given)} shape a new student; --student already has its prefix")
    if args.student is None and args.depth is None and layers is None:
        raise UserError("give --depth N or --layers i,j,...")
    weights = args.weights or LossWeights()  # parsed by LossWeights.parse
    if args.freeze_vision:  # the vision loss trains only the tower: nothing to train when it is frozen
        if weights.vision:
            raise UserError("--weights vision=X trains the vision tower, which --freeze-vision freezes")
        weights = dataclasses.replace(weights, vision=0.0)
    if grid is not None:
        if args.weights is not None or args.attn_layers is not None:
            raise UserError("--weights / --attn-layers do not apply to step distillation")
        if args.fsdp or args.gradient_checkpointing:
            raise UserError(
                "step distillation does not support --fsdp or --gradient-checkpointing (it trains through "
                "the cached-prefix sampler, not the joint pass)"
            )
    setup_threads(args)
    teacher = load_model(args.teacher, dtype="float32")
    if grid is not None:
        loss_cfg = StepDistillConfig(
            grid=grid,
            target_steps=args.target_steps or teacher.config.num_inference_steps,
            states=args.states,
        )
    else:
        loss_cfg = DistillLossConfig(
            weights=weights,
            attn_pairs=args.attn_layers,  # parsed by parse_attn_pairs
        )
    if args.student is not None:
        student = load_model(args.student, dtype="float32").train()
    else:
        student = make_student(
            teacher,
            depth=args.depth,
            layers=layers,
            vlm_layers=args.backbone_layers,
            merge=args.image_merge,
            vision_depth=args.vision_layers,
            vision_layers=args.vision_layer_map,
        )
    if args.attn_layers is not None and loss_cfg.weights.attn > 0:  # before the dataset is read
        check_attn_pairs(args.attn_layers, student.config.depth, teacher.config.depth)
    source, write_extra = make_source(args, teacher.config, processor_dir=args.student or args.teacher)
    final = train(
        student,
        source,
        cfg,
        loss_cfg,
        teacher=teacher,
        resume=args.resume,
        write_extra=write_extra,
        run_info={  # paths as results record them (shallowpi.paths)
            "command": "distill",
            "teacher": portable_path(args.teacher),
            "dataset": portable_path(args.dataset),
            "layer_map": student.config.layer_map,
            "vlm_layer_map": student.config.vlm_layer_map,
            "image_merge": student.config.vision.merge,
            "vision_layer_map": student.config.vision_layer_map,
            "student": portable_path(args.student),
            "time_grid": grid,
        },
    )
    print(f"student saved in {final}")
    return 0


def step_grid(args: argparse.Namespace) -> list[float] | None:
    """--num-steps / --time-grid -> the student's time grid (validated), or None (depth distillation)."""
    from shallowpi.model.config import check_time_grid, uniform_time_grid

    if args.time_grid is not None:
        try:
            grid = check_time_grid([float(x) for x in args.time_grid.split(",")])
        except ValueError as e:
            raise UserError(f"--time-grid {args.time_grid}: {e}") from e
        if args.num_steps is not None and args.num_steps != len(grid) - 1:
            raise UserError(f"--num-steps {args.num_steps} but --time-grid has {len(grid) - 1}")
        return grid
    if args.num_steps is None:
        return None
    if args.num_steps < 1:
        raise UserError(f"--num-steps must be >= 1, got {args.num_steps}")
    return uniform_time_grid(args.num_steps)
