"""`shallowpi bench`: latency (median / p90, split vision / prefix / denoise), FLOPs and peak memory.

    shallowpi bench --preset mid --compare 6,18 --modes reference,engine --out bench/mid.json
    shallowpi bench --policy outputs/teacher outputs/student_L6 --device cuda --dtype bfloat16 \
        --modes engine,compiled,cuda_graph
    shallowpi bench --preset pi05 --depth 6 --device cuda --dtype bfloat16 --cameras 2
    shallowpi bench --preset pi05 --compare 18,6 --image-merge 2 --vision-depth 14 --dtype bfloat16
        (the L6 student with 2 x 2 merged image tokens and 14 of SigLIP's 27 layers, against the L18 teacher)
    shallowpi bench --policy outputs/teacher --backend torch,onnxruntime --modes engine

Runs every model x mode of the torch backend in one process on the same inputs, calls interleaved; the
onnxruntime backend (an export of each model, made here) in a child process of its own. Writes one JSON
(see shallowpi/bench/ for the fields: each run's backend and warm-up) plus a latency-vs-depth PNG when
matplotlib is installed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shallowpi.commands.options import (
    add_device_argument,
    add_num_steps_argument,
    check_device,
    check_out_file,
    nonnegative_int,
    positive_int,
)
from shallowpi.errors import UserError

MIN_ITERS = 20
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def _depths(text: str) -> list[int]:
    try:
        depths = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        depths = []
    if not depths:
        raise argparse.ArgumentTypeError(f"expected comma-separated depths like 6,18, got {text!r}")
    return depths


def _modes(text: str) -> list[str]:
    modes = [x.strip() for x in text.split(",") if x.strip()]
    if not modes:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated modes like reference,engine, got {text!r}"
        )
    return modes


def _backends(text: str) -> list[str]:
    from shallowpi.infer.backends import BACKENDS

    backends = [x.strip() for x in text.split(",") if x.strip()]
    if not backends:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated backends like torch,onnxruntime, got {text!r}"
        )
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown backend {bad[0]!r}; choose from {', '.join(BACKENDS)}")
    if len(set(backends)) != len(backends):
        raise argparse.ArgumentTypeError(f"each backend once, got {text!r}")
    return backends


# also a Hugging Face hub id org/name[@revision] (cli.resolve_hub_ids)
HUB_IDS = {"policy": "policy"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--policy", nargs="+", help="pretrained folder(s), e.g. teacher and student")
    src.add_argument("--preset", help="random-weight model preset: pi0, pi05, mid or tiny")
    parser.add_argument(
        "--depth", type=positive_int, default=None, help="layers per stack for --preset (default: preset's)"
    )
    parser.add_argument(
        "--compare", type=_depths, default=None, help="several depths for --preset, e.g. 6,18"
    )
    parser.add_argument(
        "--variant", choices=["pi0", "pi05"], default=None, help="override the preset's variant"
    )
    parser.add_argument(
        "--image-merge",
        type=positive_int,
        default=None,
        help="students of --preset (every --compare depth but the deepest, else the one model): merge each "
        "M x M block of image tokens into one (M must divide the patch grid)",
    )
    parser.add_argument(
        "--vision-depth",
        type=positive_int,
        default=None,
        help="students of --preset: keep N of the SigLIP tower's layers (subsampled like distill's "
        "--vision-layers)",
    )
    add_device_argument(parser)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--batch-size", type=positive_int, default=1)
    parser.add_argument(
        "--cameras",
        type=positive_int,
        default=None,
        help="valid camera slots (others masked); default all but one",
    )
    parser.add_argument(
        "--lang-tokens", type=positive_int, default=None, help="valid prompt tokens (default 20)"
    )
    add_num_steps_argument(parser)
    parser.add_argument(
        "--chunk", type=positive_int, default=None, help="action chunk (default: the config's, 50)"
    )
    parser.add_argument(
        "--modes",
        type=_modes,
        default=None,
        help="comma-separated: reference, reference_nocompact, engine, engine_nocompact, engine_unfolded, "
        "compiled, cuda_graph, cuda_graph_unfolded, compiled_cuda_graph (default: reference,engine on CPU; engine,compiled,cuda_graph on CUDA)",
    )
    parser.add_argument(
        "--backend",
        type=_backends,
        default=None,
        help="comma-separated: torch (the modes above), onnxruntime (an ONNX export, CPU, its own process) "
        "(default: the faster one for the device)",
    )
    parser.add_argument("--warmup", type=nonnegative_int, default=3, help="untimed calls per runner first")
    parser.add_argument(
        "--iters", type=int, default=MIN_ITERS, help=f"timed calls per runner (>= {MIN_ITERS})"
    )
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-count-flops", action="store_true", help="skip torch's FLOP counter cross-check")
    parser.add_argument("--out", default="bench.json", help="JSON output path")
    parser.add_argument("--plot", default=None, help="PNG path (default: next to --out when several depths)")


def run(args: argparse.Namespace) -> int:
    from shallowpi.bench import BenchSettings, plot_latency, run_bench, write_json
    from shallowpi.infer.backends import default_backend
    from shallowpi.paths import portable_path

    if args.iters < MIN_ITERS:
        raise UserError(f"--iters must be >= {MIN_ITERS} for a meaningful median/p90")
    if args.compare and args.depth is not None:
        raise UserError("give --depth or --compare, not both")
    if args.policy and (args.compare or args.depth is not None or args.variant):
        raise UserError("--depth/--compare/--variant apply to --preset only")
    if args.policy and (args.image_merge is not None or args.vision_depth is not None):
        raise UserError("--image-merge/--vision-depth apply to --preset only (a policy has its own prefix)")
    check_out_file(args.out)  # before the benchmark, not when its JSON is written
    check_out_file(args.plot, "--plot", PLOT_SUFFIXES)
    device = check_device(args.device)
    cuda = device.startswith("cuda")
    modes = args.modes or (["engine", "compiled", "cuda_graph"] if cuda else ["reference", "engine"])
    settings = BenchSettings(
        preset=args.preset,
        variant=args.variant,
        depths=args.compare or ([args.depth] if args.depth is not None else []),
        image_merge=args.image_merge,
        vision_depth=args.vision_depth,
        policies=args.policy or [],
        device=device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        cameras=args.cameras,
        lang_tokens=args.lang_tokens,
        num_steps=args.num_steps,
        chunk=args.chunk,
        modes=modes,
        backends=args.backend or [default_backend(device)],
        warmup=args.warmup,
        iters=args.iters,
        threads=args.threads,
        seed=args.seed,
        count_flops=not args.no_count_flops,
    )
    result = run_bench(settings)
    out = Path(args.out)
    plot = args.plot or (out.with_suffix(".png") if len({r["depth"] for r in result["runs"]}) > 1 else None)
    result["plot"] = None
    if plot:
        written = plot_latency(result, plot)
        result["plot"] = portable_path(written) if written else None
    write_json(result, out)
    for r in result["ratios"]:
        print(
            f"  {r['run']} / {r['baseline']}: latency x{r['latency_median_ratio']:.3f} "
            f"(FLOPs x{r['flops_ratio']:.3f})"
        )
    print(f"wrote {out}" + (f" and {result['plot']}" if result["plot"] else ""))
    return 0
