"""`shallowpi distill`: a shallow student from a teacher, trained with task + velocity KD + attention KD.

shallowpi distill --teacher TEACHER_DIR --dataset DATA --depth 6 --steps 30000 --batch-size 64 --output OUT
torchrun --nproc-per-node 8 -m shallowpi distill ...        # DDP (add --fsdp for FSDP2)
"""

from __future__ import annotations

import argparse

from shallowpi.distill.run import add_training_arguments
from shallowpi.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, help="teacher pretrained_model folder (LeRobot layout)")
    p.add_argument("--depth", type=int, default=None, help="student depth (layer map round(linspace))")
    p.add_argument("--layers", default=None, help="explicit teacher layers, e.g. 0,3,7,10,14,17")
    p.add_argument(
        "--vlm-layers",
        default=None,
        help="backbone's own teacher layers, e.g. 0,1,2,3,4,5 (the authors' released initialisation, a "
        "baseline); default: the same layers as the expert",
    )
    p.add_argument(
        "--weights",
        default="task=1,kd=1,attn=1",
        help="loss weights, e.g. task=1,kd=1,attn=1 (attn=1 is a placeholder until the study tunes it)",
    )
    p.add_argument(
        "--attn-layers",
        default=None,
        help="attention-KD (student:teacher) layer pairs, e.g. 3:10 (default: the middle student layer)",
    )
    add_training_arguments(p)


def run(args: argparse.Namespace) -> int:
    from shallowpi.distill.losses import DistillLossConfig, LossWeights, parse_attn_pairs
    from shallowpi.distill.run import make_source, setup_threads, train_config
    from shallowpi.distill.student import make_student
    from shallowpi.distill.trainer import train
    from shallowpi.model import load_model

    setup_threads(args)
    cfg = train_config(args)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    if args.depth is None and layers is None:
        raise UserError("give --depth N or --layers i,j,...")
    loss_cfg = DistillLossConfig(
        weights=LossWeights.parse(args.weights),
        attn_pairs=parse_attn_pairs(args.attn_layers) if args.attn_layers else None,
    )
    teacher = load_model(args.teacher, dtype="float32")
    vlm_layers = [int(x) for x in args.vlm_layers.split(",")] if args.vlm_layers else None
    student = make_student(teacher, depth=args.depth, layers=layers, vlm_layers=vlm_layers)
    source, write_extra = make_source(args, teacher.config, processor_dir=args.teacher)
    final = train(
        student,
        source,
        cfg,
        loss_cfg,
        teacher=teacher,
        resume=args.resume,
        write_extra=write_extra,
        run_info={
            "command": "distill",
            "teacher": str(args.teacher),
            "dataset": args.dataset,
            "layer_map": student.config.layer_map,
            "vlm_layer_map": student.config.vlm_layer_map,
        },
    )
    print(f"student saved in {final}")
    return 0
