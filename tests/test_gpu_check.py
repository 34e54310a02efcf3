"""benchmarks/gpu_check.sh cannot rot unseen: its --dry-run runs every step on a CPU (the cuda tests
collected, the two bench runs on the tiny preset, the TensorRT step parsed) into the files the GPU run
writes, and every JSON it promises exists and parses."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

from paths import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
STEPS = ["preflight", "cuda_tests", "bench_graph", "bench_fold", "bench_compiled", "trt_build"]


def _cuda_tests() -> list[str]:
    tree = ast.parse((REPO / "tests" / "test_cuda.py").read_text())
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


def test_dry_run_runs_every_step_on_a_cpu_and_writes_its_json(tmp_path):
    out = tmp_path / "gpu_check"
    env = os.environ | {"PYTHON": sys.executable, "GPU_CHECK_BUDGET_S": "400"}
    run = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", str(out)], env=env, capture_output=True, text=True, timeout=500
    )
    assert run.returncode == 0, run.stdout + run.stderr

    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["ok"] is True and summary["dry_run"] is True
    assert [s["step"] for s in summary["steps"]] == STEPS
    assert all(s["exit"] == 0 for s in summary["steps"])

    log = (out / "cuda_tests.log").read_text()  # collected = imported, fixtures and parametrisation resolved
    assert _cuda_tests() and all(f"tests/test_cuda.py::{name}" in log for name in _cuda_tests()), log

    for name, modes in (("graph", ["engine", "engine_nocompact"]), ("compiled", ["engine", "reference"])):
        bench = json.loads((out / f"bench_pi05_bf16_{name}.json").read_text())
        assert bench["schema"] == "shallowpi.bench/3"
        assert (bench["settings"]["device"], bench["settings"]["dtype"]) == ("cpu", "bfloat16")
        assert sorted((r["depth"], r["mode"]) for r in bench["runs"]) == sorted(
            (d, m) for d in (1, 2) for m in modes
        )
        assert all(r["latency_ms"]["median"] > 0 for r in bench["runs"])
        assert bench["ratios"]
    fold = json.loads((out / "bench_pi05_bf16_fold.json").read_text())  # folded vs unfolded engine
    assert sorted((r["depth"], r["mode"]) for r in fold["runs"]) == [(2, "engine"), (2, "engine_unfolded")]
    assert json.loads((out / "trt_timing.json").read_text()) == {}  # no trtexec logs in a dry run


def test_usage_error_is_exit_2(tmp_path):
    run = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "usage:" in run.stderr
