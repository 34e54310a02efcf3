"""`shallowpi eval`: success rates of a policy in simulation (Meta-World), written as LeRobot's eval_info.json.

    shallowpi eval --policy outputs/student_L6 --env metaworld --tasks mt10 --episodes-per-task 50 \
        --seed 1000 --max-steps 200 --n-action-steps 10 --workers 2 --video outputs/eval/videos
    shallowpi eval --policy outputs/student_L6 --tasks mt10 --backend onnxruntime   # the same, onnxruntime
    shallowpi eval --policy outputs/student_L6 --tasks mt10 --n-action-steps 5 --inference-delay 2 --rtc

Held-out configurations: episode e of a task starts from MT1(task, seed + e // 50).train_tasks[e % 50].
Writes <out>/eval_info.json (default out: outputs/eval/<policy folder name>).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shallowpi.commands.options import (
    add_device_argument,
    add_num_steps_argument,
    check_device,
    check_out_folder,
    positive_int,
)

# also a Hugging Face hub id org/name[@revision] (cli.resolve_hub_ids)
HUB_IDS = {"policy": "policy"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from shallowpi.sim.evaluate import EvalConfig as C  # the defaults

    parser.add_argument("--policy", required=True, help="pretrained folder (model + processor)")
    parser.add_argument("--env", choices=["metaworld"], default="metaworld")
    parser.add_argument("--tasks", default="mt10", help="mt10, mt50 or comma-separated task names")
    parser.add_argument("--episodes-per-task", type=int, default=C.episodes_per_task)
    parser.add_argument(
        "--seed", type=int, default=C.seed, help="MT1(task, seed) configurations (demos use 0)"
    )
    parser.add_argument(
        "--max-steps", type=int, default=C.max_steps, help="episode cap (Meta-World allows <= 500)"
    )
    parser.add_argument(
        "--n-action-steps",
        type=int,
        default=C.n_action_steps,
        help="actions run per chunk (default: the policy's config.json n_action_steps, else the whole chunk)",
    )
    parser.add_argument("--workers", type=int, default=C.workers, help="simulator worker processes")
    parser.add_argument(
        "--image-size", type=positive_int, default=None, help="render size (default: the policy's input size)"
    )
    add_device_argument(parser)
    parser.add_argument(
        "--backend",
        choices=["torch", "onnxruntime"],
        default=None,
        help="torch: shallowpi's engine; onnxruntime: an ONNX export of the policy (made on the fly, CPU) "
        "(default: the faster one for the device)",
    )
    add_num_steps_argument(parser)
    parser.add_argument(
        "--blank-images",
        action="store_true",
        help="feed all-black camera images (an ablation: how much the policy relies on vision)",
    )
    parser.add_argument("--video", default=None, metavar="DIR", help="write MP4s of the first episodes here")
    parser.add_argument("--videos-per-task", type=int, default=C.videos_per_task)
    parser.add_argument("--out", default=None, help="output folder for eval_info.json")
    parser.add_argument(
        "--truncate-prompt",
        action="store_true",
        help="cut prompts longer than the model reads (pi05: the task text, never the state) instead of failing",
    )
    parser.add_argument(
        "--inference-delay",
        type=int,
        default=C.inference_delay,
        metavar="D",
        help="control steps the robot keeps executing the old chunk while the next is sampled: the next chunk "
        "is requested from the observation D steps before the old chunk's actions run out and starts at its "
        "index D (needs D + actions per chunk <= the chunk; default 0)",
    )
    parser.add_argument(
        "--rtc",
        action="store_true",
        help="real-time chunking: sample each chunk guided toward the old chunk's unexecuted tail (torch backend)",
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="PaliGemma SentencePiece tokenizer.model for LeRobot folders that ship none "
        "(default: the local Hugging Face cache)",
    )


def run(args: argparse.Namespace) -> int:
    from shallowpi.data.lerobot_processor import use_tokenizer
    from shallowpi.sim import metaworld_env as mw
    from shallowpi.sim.evaluate import EvalConfig, evaluate

    use_tokenizer(args.tokenizer)
    cfg = EvalConfig(
        policy=args.policy,
        tasks=mw.resolve_tasks(args.tasks),
        episodes_per_task=args.episodes_per_task,
        seed=args.seed,
        max_steps=args.max_steps,
        n_action_steps=args.n_action_steps,
        workers=args.workers,
        image_size=args.image_size,
        device=check_device(args.device),
        num_steps=args.num_steps,
        blank_images=args.blank_images,
        video_dir=args.video,
        videos_per_task=args.videos_per_task,
        truncate_prompt=args.truncate_prompt or None,
        backend=args.backend,
        inference_delay=args.inference_delay,
        rtc=args.rtc,
    )
    cfg.validate()
    check_out_folder(args.out)
    check_out_folder(args.video, "--video")
    out = Path(args.out) if args.out else Path("outputs/eval") / Path(args.policy).resolve().name
    run_ = evaluate(cfg, out, progress=not args.no_progress)
    overall = run_.info["overall"]
    for task, g in run_.info["per_group"].items():
        print(f"  {task:<28} {g['pc_success']:6.1f} %  ({g['n_episodes']} episodes)")
    print(
        f"overall {overall['pc_success']:.1f} % over {overall['n_episodes']} episodes "
        f"in {overall['eval_s']:.0f} s; wrote {run_.path}"
    )
    if overall["n_stopped"]:
        first = next(r for r in run_.results if r.stopped)
        print(
            f"{overall['n_stopped']} episode(s) stopped: the policy produced unsafe actions, never sent to the "
            f"env (first: {first.task} episode {first.episode}: {first.stopped})",
            file=sys.stderr,
        )
        return 1
    return 0
