"""The mid π0.5 config: shallowpi vs LeRobot 0.6.1's own π0.5, in one process, on equal outputs (CPU fp32, batch 1).

    python benchmarks/vs_lerobot.py                 # re-runs itself in the cached LeRobot 0.6.1 venv
    python benchmarks/vs_lerobot.py --depths 18,6 --iters 10

LeRobot builds its PI05Policy at the mid sizes (its constructors patched to those sizes, forward code untouched;
tests/lerobot_scripts/lerobot_sizes.py) with seed 0 and saves it; shallowpi loads that folder strictly. Both
get the same inputs (3 camera slots of which 1 is masked, 48 prompt tokens of which 20 are valid, chunk 50,
10 Euler steps) and noise: LeRobot's `model.sample_actions` (its preprocessed-batch entry point; image
resizing and tokenisation are outside both timings) against shallowpi's reference model and its engine. Calls
are interleaved; medians. Writes benchmarks/results/vs_lerobot.json.

LeRobot 0.4.4 cannot be the baseline here: its π0.5 imports a transformers build patched for it that exists
only on GitHub (no package registry has it), so 0.4.4's π0.5 cannot be built on these machines; 0.6.1 runs
π0.5 with its own Gemma code and is what users run today. Both sides use the venv's torch, so the comparison
is of the two implementations, not of two torch builds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def reexec_in_venv() -> None:
    """Run this script again with the LeRobot 0.6.1 venv's python (built once and cached by the tests)."""
    python = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "lerobot_venv.py"), "0.6.1"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    os.execve(python, [python, __file__, *sys.argv[1:]], env)


def lerobot_policy(cfg, out: Path):
    """LeRobot 0.6.1's PI05Policy at cfg's sizes, seed 0, saved to `out` with our sizes object added."""
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.pi05.configuration_pi05 import PI05Config
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy

    sys.path.insert(0, str(ROOT / "tests" / "lerobot_scripts"))
    from lerobot_sizes import sized_construction

    from shallowpi.model.lerobot_config import config_to_lerobot

    s = cfg.vision.image_size
    feats = {
        f"observation.images.{c}": PolicyFeature(type=FeatureType.VISUAL, shape=(3, s, s))
        for c in cfg.cameras
    }
    feats["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(8,))
    lr_cfg = PI05Config(
        input_features=feats,
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(7,))},
        chunk_size=cfg.chunk_size,
        n_action_steps=cfg.chunk_size,
        tokenizer_max_length=cfg.tokenizer_max_length,
        image_resolution=(s, s),
        device="cpu",
        push_to_hub=False,
    )
    sizes = config_to_lerobot(cfg)["shallowpi"]
    patches = sized_construction("pi05", sizes)
    for p in patches:
        p.start()
    try:
        torch.manual_seed(0)
        policy = PI05Policy(lr_cfg).eval()
    finally:
        for p in patches:
            p.stop()
    policy.save_pretrained(out)
    raw = json.loads((out / "config.json").read_text())
    raw["shallowpi"] = sizes
    (out / "config.json").write_text(json.dumps(raw, indent=2))
    return policy


def measure(depth: int, *, warmup: int, iters: int) -> dict:
    """One depth: LeRobot's policy and shallowpi's reference and engine on the same inputs, interleaved."""
    import torch

    from shallowpi.bench.inputs import make_inputs
    from shallowpi.infer.engine import InferenceEngine
    from shallowpi.infer.flops import count_flops
    from shallowpi.model.checkpoint import load_model
    from shallowpi.model.config import mid

    cfg = mid("pi05", depth=depth)
    with tempfile.TemporaryDirectory() as tmp:
        policy = lerobot_policy(cfg, Path(tmp))
        model = load_model(tmp).eval()  # strict: every LeRobot tensor has its place
    inputs = make_inputs(cfg, batch=1, cameras=2, lang_tokens=20, device="cpu")
    obs, noise = inputs.observation, inputs.noise
    images = [obs.images[:, i] for i in range(obs.images.shape[1])]  # (1, 3, S, S) each
    masks = [obs.image_masks[:, i] for i in range(obs.image_masks.shape[1])]  # (1,) each
    t0 = time.perf_counter()
    engine = InferenceEngine(model, batch_size=1, device="cpu", dtype="float32")
    build_s = time.perf_counter() - t0
    calls = {
        "lerobot_0.6.1": lambda: policy.model.sample_actions(
            images, masks, obs.tokens, obs.token_masks, noise=noise.clone(), num_steps=10
        ),
        "shallowpi_reference": lambda: model.sample_actions(obs, noise=noise, num_steps=10),
        "shallowpi_engine": lambda: engine.sample_actions(obs, noise=noise, num_steps=10),
    }
    with torch.inference_mode():
        outs = {k: f().float() for k, f in calls.items()}  # (1, chunk, max_action_dim) each
        flops = {k: count_flops(f) for k, f in calls.items()}  # what each really computes, per call
        for _ in range(warmup - 1):
            for f in calls.values():
                f()
        times: dict[str, list[float]] = {k: [] for k in calls}
        for _ in range(iters):
            for k, f in calls.items():
                t = time.perf_counter()
                f()
                times[k].append((time.perf_counter() - t) * 1e3)
    ref = outs["lerobot_0.6.1"]
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "depth": depth,
        "median_ms": med,
        "min_ms": {k: min(v) for k, v in times.items()},
        "max_abs_diff_vs_lerobot": {k: float((v - ref).abs().max()) for k, v in outs.items()},
        "speedup_vs_lerobot": {k: med["lerobot_0.6.1"] / v for k, v in med.items()},
        "gflop_per_call": {k: v / 1e9 for k, v in flops.items()},
        "gflop_per_s": {k: flops[k] / med[k] / 1e6 for k in calls},
        "engine_build_s": build_s,
    }


def matmul_gflop_per_s(m: int = 412, k: int = 512, n: int = 4096, iters: int = 50) -> float:
    """This CPU's fp32 matmul rate at the backbone prefix's MLP shape (412 prefix tokens x width 512 -> 2 x
    2048): the ceiling an arithmetic-bound implementation approaches."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(5):
        a @ b
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    return 2 * m * k * n * iters / (time.perf_counter() - t) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", default="18")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "vs_lerobot.json"))
    args = ap.parse_args()
    try:
        import lerobot  # noqa: F401
    except ImportError:
        reexec_in_venv()

    import lerobot
    import torch

    from shallowpi.paths import portable_path

    torch.set_num_threads(args.threads)
    rows = []
    for depth in [int(d) for d in args.depths.split(",")]:
        rows.append(measure(depth, warmup=args.warmup, iters=args.iters))
        print(json.dumps(rows[-1], indent=1), flush=True)
    result = {
        "command": "python benchmarks/vs_lerobot.py " + " ".join(sys.argv[1:]),
        "environment": {
            "lerobot": lerobot.__version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "threads": args.threads,
            "cpu_count": os.cpu_count(),
            "matmul_fp32_gflop_per_s": matmul_gflop_per_s(),
        },
        "settings": {
            "config": "mid pi05",
            "batch": 1,
            "dtype": "float32",
            "camera_slots": 3,
            "cameras_valid": 2,
            "prompt_length": 48,
            "lang_tokens_valid": 20,
            "chunk": 50,
            "steps": 10,
            "warmup": args.warmup,
            "iters": args.iters,
            "timing": "interleaved calls in one process, time.perf_counter",
        },
        "runs": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {portable_path(out)}")


if __name__ == "__main__":
    main()
