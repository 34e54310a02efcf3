"""`shallowpi serve`: serve a pretrained policy over openpi's websocket protocol.

    shallowpi serve --policy outputs/student_L6 --port 8000 --obs-map libero
    # robot side, unchanged openpi client:
    #   from openpi_client.websocket_client_policy import WebsocketClientPolicy
    #   policy = WebsocketClientPolicy(host="127.0.0.1", port=8000); policy.infer(obs)["actions"]

Real-time chunking: see RTC_HELP (the --help epilog) and docs/rtc.md.

The server listens on 127.0.0.1 unless --host says otherwise (0.0.0.0 exposes it to the network; there is
no authentication, like openpi's reference server).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from shallowpi.commands.options import DEVICE_HELP, add_num_steps_argument, check_device, port, positive_int
from shallowpi.errors import UserError
from shallowpi.serve.obs_mapping import PRESETS


def _positive_mb(text: str) -> float:
    try:
        mb = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of MiB, got {text!r}") from None
    if not mb > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return mb


# also a Hugging Face hub id org/name[@revision] (cli.resolve_hub_ids)
HUB_IDS = {"policy": "policy"}


RTC_HELP = (
    "Real-time chunking (torch backend): beside the observation keys a request may send "
    "'rtc_prev_actions' (n, action_dim), the unexecuted tail of its last chunk at request time, and "
    "'rtc_inference_delay' (int, 0..n), the control steps the robot keeps executing it while the request is "
    "served; the reply is guided toward that tail (LeRobot's defaults: LINEAR schedule, guidance weight at "
    "most 10, execution horizon 10) and its first delay actions reproduce it, so the client starts the new "
    "chunk at index delay. A request sending neither gets the usual reply; bad values are one error reply; "
    "the onnxruntime backend refuses such requests."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = RTC_HELP
    parser.add_argument(
        "--policy", required=True, help="pretrained folder (model + processor), e.g. a student"
    )
    parser.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "onnxruntime"],
        help="torch: a pretrained folder; onnxruntime: a folder written by `shallowpi export` (no torch needed)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument(
        "--port", type=port, default=8000, help="TCP port (openpi's default 8000; 0 = any free)"
    )
    parser.add_argument("--device", default=None, help=DEVICE_HELP + "; torch backend only")
    parser.add_argument("--default-prompt", default=None, help="task text used when a request has no prompt")
    parser.add_argument(
        "--obs-map",
        default="libero",
        help=f"observation keys the robot sends: one of {sorted(PRESETS)} or a .json mapping file "
        "(see shallowpi/serve/obs_mapping.py)",
    )
    add_num_steps_argument(parser)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="noise seed per request (same observation -> same actions); -1 = random",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default: torch's; 1 can cut tail latency "
        "when clients share the server's cores)",
    )
    parser.add_argument(
        "--max-frame-mb",
        type=_positive_mb,
        default=None,
        help="largest request frame accepted, in MiB (default: the policy's largest valid observation, "
        "every camera up to 1280x1280 uint8)",
    )
    parser.add_argument(
        "--truncate-prompt",
        action="store_true",
        help="cut prompts longer than the model reads (pi05: the task text, never the state) instead of "
        "answering an error",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="PaliGemma SentencePiece tokenizer.model for LeRobot folders that ship none "
        "(default: the local Hugging Face cache)",
    )


async def _serve(server) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)  # finish cleanly: close connections, stop the worker

    def ready(port: int) -> None:
        # One parseable line for scripts and tests that start the server with --port 0.
        print(f"shallowpi serve: listening on ws://{server.host}:{port}", flush=True)

    await server.serve_forever(stop, on_ready=ready)


def _load_policy(args: argparse.Namespace):
    common = dict(
        obs_mapping=args.obs_map,
        default_prompt=args.default_prompt,
        seed=None if args.seed < 0 else args.seed,
    )
    if args.backend == "onnxruntime":
        if args.device is not None:
            raise UserError("--device is for the torch backend; onnxruntime runs on its CPU provider here")
        from shallowpi.onnx_runtime.policy import OnnxPolicy  # numpy + onnxruntime only

        return OnnxPolicy.from_exported(
            args.policy,
            threads=args.threads,
            num_steps=args.num_steps,
            truncate_prompt=args.truncate_prompt or None,
            **common,
        )
    from shallowpi.data.lerobot_processor import use_tokenizer
    from shallowpi.serve.policy import PiPolicy  # imports torch: only when serving

    device = check_device(args.device)
    use_tokenizer(args.tokenizer)  # LeRobot folders ship no tokenizer

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return PiPolicy.from_pretrained(
        args.policy,
        device=device,
        num_steps=args.num_steps,
        truncate_prompt=args.truncate_prompt or None,
        **common,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from shallowpi.serve.server import PolicyServer

    policy = _load_policy(args)
    max_frame = None if args.max_frame_mb is None else int(args.max_frame_mb * 2**20)
    server = PolicyServer(policy, args.host, args.port, max_frame_bytes=max_frame)
    logging.getLogger(__name__).info("largest request frame accepted: %d bytes", server.max_frame_bytes)
    try:
        asyncio.run(_serve(server))
    except OSError as e:  # typically: the port is taken
        raise UserError(f"cannot listen on {args.host}:{args.port}: {e}") from e
    return 0
