"""`--backend torch|onnxruntime` (issue 27): eval and bench run either runtime on the same policy, the same
actions for the same noise, and bench records each backend's warm-up."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from shallowpi.cli import main
from shallowpi.errors import UserError
from shallowpi.infer.backends import default_backend, resolve_backend

needs_ort = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")), reason="needs the export extra"
)
needs_sim = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None, reason="needs the sim extra")


def test_backend_resolution() -> None:
    assert default_backend("cuda") == "torch"
    assert resolve_backend(None, "cpu") == default_backend("cpu")
    with pytest.raises(UserError, match="unknown backend 'tvm'"):
        resolve_backend("tvm", "cpu")
    with pytest.raises(UserError, match="runs on the CPU"):
        resolve_backend("onnxruntime", "cuda")


@needs_ort
@needs_sim
def test_eval_onnxruntime_backend_takes_the_torch_backends_actions(tmp_path: Path) -> None:
    from shallowpi.sim.evaluate import EvalConfig, evaluate
    from test_eval_metaworld import save_random_metaworld_policy

    policy = save_random_metaworld_policy(tmp_path / "tiny_mw")
    runs = {}
    for backend in ("torch", "onnxruntime"):
        cfg = EvalConfig(
            policy=str(policy),
            tasks=["reach-v3"],
            episodes_per_task=1,
            max_steps=6,
            workers=1,
            backend=backend,
        )
        runs[backend] = evaluate(cfg, tmp_path / backend, progress=False)
        assert runs[backend].info["settings"]["backend"] == backend
    a, b = runs["torch"].results[0], runs["onnxruntime"].results[0]
    assert (a.steps, a.success) == (b.steps, b.success)
    assert a.sum_reward == pytest.approx(b.sum_reward, abs=1e-4)  # same noise, same actions up to rounding
    assert not list(tmp_path.glob("*/onnx"))  # the on-the-fly export is not left behind


@needs_ort
def test_bench_times_each_backend_and_records_warmup(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [
        "bench",
        "--preset",
        "tiny",
        "--depth",
        "2",
        "--backend",
        "torch,onnxruntime",
        "--modes",
        "engine",
    ]
    argv += ["--iters", "20", "--warmup", "1", "--threads", "1", "--no-count-flops", "--out", str(out)]
    assert main(argv) == 0
    r = json.loads(out.read_text())
    runs = {x["backend"]: x for x in r["runs"]}
    assert set(runs) == {"torch", "onnxruntime"} and r["settings"]["backends"] == ["torch", "onnxruntime"]
    for run in runs.values():
        assert run["warmup_s"] > 0 and run["latency_ms"]["n"] == 20
    assert runs["onnxruntime"]["mode"] == "onnxruntime" and runs["onnxruntime"]["pid"] != runs["torch"]["pid"]
    assert runs["onnxruntime"]["max_abs_diff_vs_first_mode"] < 1e-4  # the same actions, another process
    assert np.isfinite(runs["onnxruntime"]["memory"]["peak_mb"])
