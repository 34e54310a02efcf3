"""`shallowpi collect --env metaworld --tasks mt10 --demos-per-task 50 --seed 0 --image-size 128
--cameras corner4,gripperPOV --out DIR`: scripted demonstrations written as a LeRobotDataset v3.0."""

from __future__ import annotations

import argparse
import json

from shallowpi.commands.options import SIM_WORKERS_HELP, add_old_flag, add_old_positional
from shallowpi.errors import UserError

ENVS = ("metaworld",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from shallowpi.sim.collect import CAMERAS
    from shallowpi.sim.collect import CollectConfig as C  # the defaults
    from shallowpi.sim.metaworld_env import STATE_LAYOUTS

    parser.add_argument(
        "--env", choices=ENVS, default="metaworld", help="simulator whose scripted experts to run"
    )
    add_old_positional(parser, "env")  # `collect metaworld`, the spelling before --env
    parser.add_argument(
        "--tasks", default="mt10", help="mt10, mt50 or comma-separated task names (default mt10)"
    )
    parser.add_argument(
        "--demos-per-task", type=int, default=C.demos_per_task, help="demonstrations collected per task"
    )
    add_old_flag(parser, "--episodes-per-task", "demos_per_task")
    parser.add_argument(
        "--task-demos",
        default="",
        help="per-task counts that replace --demos-per-task, e.g. pick-place-v3=200 (comma-separated); "
        "episodes 0..N-1, so the smaller collection's episodes are all kept",
    )
    parser.add_argument(
        "--seed", type=int, default=C.seed, help="MT1(task, seed) configurations (eval uses 1000)"
    )
    parser.add_argument("--image-size", type=int, default=C.image_size)
    parser.add_argument("--cameras", default=",".join(CAMERAS), help="comma-separated Meta-World cameras")
    parser.add_argument(
        "--state",
        choices=list(STATE_LAYOUTS),
        default=C.state,
        help="state vector: hand xyz + gripper (as LeRobot's env); + the goal position; or + the goal only "
        "where it does not locate the object, and a goal_given flag",
    )
    parser.add_argument(
        "--max-steps", type=int, default=C.max_steps, help="episode cap; failures are dropped"
    )
    parser.add_argument(
        "--extra-steps", type=int, default=C.extra_steps, help="frames kept after the first success"
    )
    parser.add_argument("--workers", type=int, default=C.workers, help=SIM_WORKERS_HELP)
    parser.add_argument("--codec", choices=["h264", "av1"], default=C.codec)
    parser.add_argument("--out", required=True, help="output dataset folder (must not exist)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--no-progress", action="store_true")


def parse_task_demos(text: str) -> dict[str, int]:
    """`TASK=N,TASK=N` -> {task-v3: N}, task names read as --tasks reads them; one clear error per bad entry."""
    from shallowpi.sim.metaworld_env import resolve_tasks

    out: dict[str, int] = {}
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        task, sep, n = (x.strip() for x in item.partition("="))
        if not sep or not task or not n.lstrip("-").isdigit():
            raise UserError(f"--task-demos entry {item!r} is not TASK=N (e.g. pick-place-v3=200)")
        names = resolve_tasks(task)
        if len(names) != 1:  # mt10 / mt50 name several tasks
            raise UserError(f"--task-demos entry {item!r} names {len(names)} tasks; give one task per entry")
        name = names[0]
        if name in out:
            raise UserError(f"--task-demos names {name} twice")
        out[name] = int(n)
    return out


def run(args: argparse.Namespace) -> int:
    from shallowpi.sim import metaworld_env as mw
    from shallowpi.sim.collect import CollectConfig, collect

    if args.env not in ENVS:  # the old positional form has no argparse choices
        raise UserError(f"unknown env {args.env!r}; expected one of {', '.join(ENVS)}")
    cfg = CollectConfig(
        tasks=mw.resolve_tasks(args.tasks),
        demos_per_task=args.demos_per_task,
        task_demos=parse_task_demos(args.task_demos),
        seed=args.seed,
        image_size=args.image_size,
        cameras=mw.check_cameras([c.strip() for c in args.cameras.split(",") if c.strip()]),
        state=args.state,
        max_steps=args.max_steps,
        extra_steps=args.extra_steps,
        workers=args.workers,
        codec=args.codec,
    )
    cfg.validate()  # before the simulator starts
    summary = collect(cfg, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0
