"""shallowpi's torch engine against onnxruntime running shallowpi's own export, each backend alone in its own
process (issue 27): CPU, fp32, batch 1, the same inputs and noise, median of N calls.

    nice python benchmarks/engine_vs_ort.py                                # every case, modes eager,compiled
    python benchmarks/engine_vs_ort.py --cases teacher,L6 --modes eager,unfolded --iters 40
    python benchmarks/engine_vs_ort.py --pause-training                    # SIGSTOP `shallowpi train` meanwhile

Cases:
  teacher   the bundled Meta-World teacher (π0, width 64, 18 layers, chunk 10), one raw observation through
            each public API: `ActionPredictor.predict` vs `OnnxRunner.predict` (same noise)
  L6        `src/shallowpi/assets/student_metaworld` (its 6-layer student), the same way
  mid_d18   the "mid" π0.5 config (random weights, seed 0) at depth 18, model level: `InferenceEngine.
            sample_actions` vs `OnnxRunner.sample` (3 camera slots of which 2 are valid and exported, 48 prompt
  mid_d6    tokens of which 20 are valid, chunk 50, 10 Euler steps); and at depth 6

Torch modes: `eager` (the folded engine), `unfolded` (the engine on the model's own modules, as before issue
27), `compiled` (folded + torch.compile of the prefix and the Euler step, inductor's on-disk caches). The
compiled mode runs twice: once with an empty cache directory (cold warm-up) and once reusing it (cached
warm-up, and the latency that is reported).

Every (case, backend, mode) runs in a child process of its own that builds and makes its first call
(build_s: load + build, fold included; first_call_s: compiles / caches; warmup_s: both; the actions, from
which the parent reports max |difference| between backends). The children of one case then take turns:
each times `--window` calls while the others wait on a pipe, until each has `--iters` timed calls, so load
from other processes on a shared machine hits every backend alike and their ratios stay meaningful (one
process runs at a time; 0.2 s between turns lets onnxruntime's threads stop spinning). With
`--pause-training`, the training job is stopped (SIGSTOP) while one case is timed, and continued after.
Writes benchmarks/results/engine_vs_ort.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TEACHER = ROOT / "src" / "shallowpi" / "assets" / "teacher_metaworld"
STUDENT = ROOT / "src" / "shallowpi" / "assets" / "student_metaworld"
CASES = ("teacher", "L6", "mid_d18", "mid_d6")
MODES = {"eager": {}, "unfolded": {"fold": False}, "compiled": {"compile": True}}
TASK = "push the puck to the goal"


# parent: inputs and exports ---------------------------------------------------------------------------------


def _mid_model(depth: int):
    import torch

    from shallowpi.model import PiModel
    from shallowpi.model.config import preset

    torch.manual_seed(0)
    return PiModel(preset("mid", depth=depth)).eval()


def prepare(case: str, work: Path) -> dict:
    """Export the case's model and write its inputs; -> the spec the children read."""
    import torch

    from shallowpi.bench import make_inputs
    from shallowpi.export.onnx_export import ExportOptions, export_onnx, export_policy
    from shallowpi.pretrained import load_processor

    out = work / case
    spec: dict = {"case": case, "export": str(out / "onnx")}
    if case in ("teacher", "L6"):
        policy = TEACHER if case == "teacher" else STUDENT
        export_policy(policy, out / "onnx")
        pre, _ = load_processor(policy)
        c = pre.config
        rng = np.random.default_rng(0)
        sample = {
            "images": {
                src: rng.integers(0, 256, (c.image_size, c.image_size, 3), dtype=np.uint8)
                for src in c.camera_map
            },
            "state": rng.standard_normal(pre.state_dim).astype(np.float32),
            "task": TASK,
        }
        gen = torch.Generator().manual_seed(0)  # ActionPredictor.noise(0): the noise predict(seed=0) draws
        noise = torch.randn((1, c.chunk_size, c.max_action_dim), generator=gen).numpy()
        spec.update(level="predict", policy=str(policy))
        payload = {"sample": sample, "noise": noise}
    else:
        depth = int(case.split("_d")[1])
        model = _mid_model(depth)
        cfg = model.config
        cams = 2
        export_onnx(model, out / "onnx", ExportOptions(cameras=tuple(cfg.cameras[:cams])))
        x = make_inputs(cfg, batch=1, cameras=cams, lang_tokens=20, device="cpu")
        spec.update(level="model", depth=depth, cameras=cams)
        obs = x.observation
        payload = {
            "images": obs.images.numpy(),  # (1, n_slots, 3, H, W)
            "image_masks": obs.image_masks.numpy(),  # (1, n_slots)
            "tokens": obs.tokens.numpy(),
            "token_masks": obs.token_masks.numpy(),
            "noise": x.noise.numpy(),
        }
    spec["inputs"] = str(out / "inputs.pkl")
    with open(spec["inputs"], "wb") as f:
        pickle.dump(payload, f)
    return spec


# children ---------------------------------------------------------------------------------------------------


def _build(spec: dict, backend: str, mode: str | None, threads: int):
    """-> a no-argument call returning the case's actions (numpy), for this backend / mode."""
    with open(spec["inputs"], "rb") as f:
        x = pickle.load(f)
    if backend == "onnxruntime":
        from shallowpi.onnx_runtime.runner import OnnxRunner

        runner = OnnxRunner(spec["export"], threads=threads)
        if spec["level"] == "predict":
            return lambda: runner.predict(x["sample"], noise=x["noise"])
        n = spec["cameras"]
        feeds = (x["images"][:, :n], x["image_masks"][:, :n])  # the exported slots
        return lambda: runner.sample(*feeds, x["tokens"], x["token_masks"], noise=x["noise"])[0]
    import torch

    torch.set_num_threads(threads)
    from shallowpi.infer.engine import InferenceEngine

    if spec["level"] == "predict":
        from shallowpi.infer.predictor import ActionPredictor

        pred = ActionPredictor.from_pretrained(spec["policy"], device="cpu")
        pred.engine = InferenceEngine(pred.model, batch_size=1, **MODES[mode])
        return lambda: pred.predict(x["sample"], seed=0)
    engine = InferenceEngine(_mid_model(spec["depth"]), batch_size=1, **MODES[mode])
    from shallowpi.observation import Observation

    names = ("images", "image_masks", "tokens", "token_masks")
    obs = Observation(*(torch.from_numpy(x[k]) for k in names))  # π0.5: no state token
    noise = torch.from_numpy(x["noise"])
    return lambda: engine.sample_actions(obs, noise=noise)[0].numpy()


def child(spec: dict, backend: str, mode: str | None, threads: int) -> None:
    """Build, make the first call, report; then on each stdin line N time N calls and report their times."""
    t0 = time.perf_counter()
    call = _build(spec, backend, mode, threads)
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    first = np.asarray(call())
    first_call_s = time.perf_counter() - t1
    ready = {"build_s": build_s, "first_call_s": first_call_s, "actions": first.tolist(), "pid": os.getpid()}
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        times = []
        for _ in range(int(line)):
            t = time.perf_counter()
            call()
            times.append((time.perf_counter() - t) * 1e3)
        print(json.dumps(times), flush=True)


class Child:
    """One (case, backend, mode) in a process of its own, timed in windows of calls on request."""

    def __init__(self, spec: dict, backend: str, mode: str | None, threads: int, env: dict | None = None):
        self.backend, self.mode = backend, mode
        cmd = [
            sys.executable,
            __file__,
            "--child",
            json.dumps([spec, backend, mode]),
            "--threads",
            str(threads),
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.ready = self._read()
        self.times: list[float] = []

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"{self.backend} {self.mode} child failed (exit {self.proc.returncode})")
        return json.loads(line)

    def window(self, n: int, keep: bool = True) -> None:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        got = self._read()
        if keep:
            self.times += got

    def close(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        self.proc.wait()


def summary(times: list[float]) -> dict:
    xs = sorted(times)
    return {
        "median": statistics.median(xs),
        "p90": xs[round(0.9 * (len(xs) - 1))],
        "min": xs[0],
        "mean": statistics.fmean(xs),
        "n": len(xs),
    }


def measure(spec: dict, modes: list[str], args, work: Path) -> list[dict]:
    """Every backend / mode of one case in its own process; their timed calls interleaved in windows of
    `--window` calls (one process runs while the others wait on a pipe), so that the machine's load hits
    all alike. The compiled mode first runs once with an empty cache directory (its cold warm-up)."""
    env = os.environ | {"SHALLOWPI_COMPILE_CACHE": str(work / "inductor_cache" / spec["case"])}
    cold = {}
    if "compiled" in modes:
        shutil.rmtree(work / "inductor_cache" / spec["case"], ignore_errors=True)
        with training_paused(args.pause_training):
            c = Child(spec, "torch", "compiled", args.threads, env)
            c.close()
        cold = {"cold_build_s": c.ready["build_s"], "cold_first_call_s": c.ready["first_call_s"]}
    with training_paused(args.pause_training) as paused:
        children = [Child(spec, "onnxruntime", None, args.threads)]
        children += [Child(spec, "torch", m, args.threads, env) for m in modes]
        for c in children:
            c.window(args.warmup, keep=False)
        for _ in range(-(-args.iters // args.window)):
            for c in children:
                time.sleep(0.2)  # onnxruntime's threads stop spinning before the next process runs
                c.window(args.window)
        for c in children:
            c.close()
    runs = []
    for c in children:
        r = {
            "case": spec["case"],
            "backend": c.backend,
            "mode": c.mode,
            "level": spec["level"],
            "build_s": c.ready["build_s"],
            "first_call_s": c.ready["first_call_s"],
            "warmup_s": c.ready["build_s"] + c.ready["first_call_s"],
            "latency_ms": summary(c.times),
            "pid": c.ready["pid"],
            "training_paused": bool(paused),
            "actions": c.ready["actions"],
        }
        if c.mode == "compiled":
            r |= cold | {"cold_warmup_s": cold["cold_build_s"] + cold["cold_first_call_s"]}
        runs.append(r)
    return runs


@contextlib.contextmanager
def training_paused(enabled: bool):
    """SIGSTOP every `shallowpi train` process for the duration (SIGCONT always, even on error)."""
    pids: list[int] = []
    if enabled:
        found = subprocess.run(["pgrep", "-f", "shallowpi train"], capture_output=True, text=True).stdout
        pids = [int(p) for p in found.split() if int(p) != os.getpid()]
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGSTOP)
    try:
        yield pids
    finally:
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--modes", default="eager,compiled", help=f"torch engine modes: {', '.join(MODES)}")
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--window", type=int, default=5, help="calls per process before the next one runs")
    ap.add_argument("--threads", type=int, default=2, help="torch threads and onnxruntime intra-op threads")
    ap.add_argument(
        "--pause-training", action="store_true", help="SIGSTOP `shallowpi train` during each timed child"
    )
    ap.add_argument("--out", default=str(RESULTS / "engine_vs_ort.json"))
    ap.add_argument(
        "--merge", action="store_true", help="keep the other cases of an existing --out (re-time some cases)"
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        spec, backend, mode = json.loads(args.child)
        child(spec, backend, mode, args.threads)
        return

    import torch

    from shallowpi.bench import write_json
    from shallowpi.bench.results import environment

    cases = [c for c in args.cases.split(",") if c]
    modes = [m for m in args.modes.split(",") if m]
    bad = [c for c in cases if c not in CASES] + [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"unknown case/mode {bad}; cases {CASES}, modes {tuple(MODES)}")
    import onnxruntime

    env = environment(torch.device("cpu")) | {"onnxruntime": onnxruntime.__version__}
    env["torch_threads"] = args.threads
    from shallowpi.paths import portable_path

    settings = vars(args) | {"child": None, "out": portable_path(args.out)}  # no path of this machine
    result: dict = {"environment": env, "settings": settings, "runs": [], "summary": {}}
    if args.merge and Path(args.out).is_file():
        old = json.loads(Path(args.out).read_text())
        result["runs"] = [r for r in old["runs"] if r["case"] not in cases]
        result["summary"] = {c: v for c, v in old["summary"].items() if c not in cases}
        result["merged_from"] = old.get("merged_from", []) + [
            old["settings"] | {"cases": sorted(old["summary"])}
        ]
    with tempfile.TemporaryDirectory(prefix="shallowpi-engine-vs-ort-") as tmp:
        work = Path(tmp)
        specs = []
        for case in cases:
            t = time.perf_counter()
            specs.append(prepare(case, work))
            print(f"prepared {case} (export {time.perf_counter() - t:.0f} s)", flush=True)
        for spec in specs:
            runs = measure(spec, modes, args, work)
            ref = np.asarray(runs[0]["actions"])
            ort_ms = runs[0]["latency_ms"]["median"]
            for r in runs:
                r["max_abs_diff_vs_onnxruntime"] = float(np.abs(np.asarray(r.pop("actions")) - ref).max())
                r["engine_over_onnxruntime"] = r["latency_ms"]["median"] / ort_ms
                print(
                    f"  {spec['case']:<8} {r['backend']:<12} {r['mode'] or '':<9} "
                    f"median {r['latency_ms']['median']:8.1f} ms  (min {r['latency_ms']['min']:7.1f})  "
                    f"x{r['engine_over_onnxruntime']:.2f} of ort  warm-up {r['warmup_s']:6.1f} s"
                    + (f" (cold {r['cold_warmup_s']:.1f} s)" if "cold_warmup_s" in r else "")
                    + f"  |diff| {r['max_abs_diff_vs_onnxruntime']:.1e}",
                    flush=True,
                )
            result["runs"] += runs
            torch_runs = [r for r in runs if r["backend"] == "torch"]
            best = min(torch_runs, key=lambda r: r["latency_ms"]["median"])
            result["summary"][spec["case"]] = {
                "onnxruntime_ms": ort_ms,
                "best_engine_mode": best["mode"],
                "best_engine_ms": best["latency_ms"]["median"],
                "best_engine_over_onnxruntime": best["engine_over_onnxruntime"],
                **{f"{r['mode']}_ms": r["latency_ms"]["median"] for r in torch_runs},
            }
            write_json(result, args.out)
    print(f"wrote {write_json(result, args.out)}")


if __name__ == "__main__":
    main()
