#!/usr/bin/env bash
# GPU readiness check on one CUDA GPU, offline, in under 8 minutes:
#   1. the `cuda`-marked tests (bf16 autocast training, engine compiled / CUDA graph, NCCL DDP, FSDP2)
#      -> OUTDIR/cuda_tests.xml (junit) and cuda_tests.log
#   2. `shallowpi bench`, full-size π0.5 (random weights) at depths 18 and 6 in bf16:
#      eager engine + CUDA graph   -> OUTDIR/bench_pi05_bf16_graph.json (+ .png)
#      eager engine + torch.compile -> OUTDIR/bench_pi05_bf16_compiled.json (+ .png)
#      (two runs so that a slow compile cannot cost the graph numbers; each JSON holds its mode ratios)
#      folded vs unfolded engine, both replayed as CUDA graphs, depth 18 (issue 27's >= 1.3x target)
#                                   -> OUTDIR/bench_pi05_bf16_fold.json (its "ratios": cuda_graph over
#                                      cuda_graph_unfolded, the latency ratio folded / unfolded)
#   3. benchmarks/trt_build.sh OUTDIR, when that script exists, with the time that is left
# Every step runs under `timeout` within one budget (GPU_CHECK_BUDGET_S, default 470 s); OUTDIR/gpu_check.json
# records each step's exit code and seconds. Exit status 0 only if every step passed.
#
# --dry-run: the same steps, wiring, flags and output files on a CPU in well under a minute, so that the
# script cannot rot on machines without a GPU (tests/test_gpu_check.py runs it in the default test run):
#   1. the `cuda`-marked tests are collected (imported), not run (pytest --collect-only)
#   2. `shallowpi bench` on the tiny preset at depths 2 and 1, --device cpu, bf16, eager modes only
#      (cuda_graph needs CUDA; torch.compile takes a minute on a CPU), into the same JSON names
#   3. trt_build.sh is only parsed (bash -n) and trt_prepare.py summarizes nothing into trt_timing.json
#
# usage: benchmarks/gpu_check.sh [--dry-run] OUTDIR   (PYTHON=... to choose the interpreter; nothing is installed)
set -uo pipefail

DRY_RUN=0
if [[ ${1:-} == --dry-run ]]; then
    DRY_RUN=1
    shift
fi
if [[ $# -ne 1 ]]; then
    echo "usage: $0 [--dry-run] OUTDIR" >&2
    exit 2
fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$1" && OUT=$(cd "$1" && pwd)
cd "$REPO"
PY=${PYTHON:-python3}
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, installed or not
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-egl} HF_HUB_OFFLINE=1 PIP_NO_INDEX=1
BUDGET_S=${GPU_CHECK_BUDGET_S:-470}
START=$(date +%s)
STEPS=()  # "name rc seconds limit"
FAILED=0

left() { echo $((BUDGET_S - ($(date +%s) - START))); }

# run_step NAME LIMIT_S CMD...: runs CMD under timeout (capped by the budget left), log in OUTDIR/NAME.log
run_step() {
    local name=$1 limit=$2
    shift 2
    local remain
    remain=$(left)
    ((limit > remain - 5)) && limit=$((remain - 5))
    if ((limit < 20)); then
        echo "== $name: skipped, budget spent"
        STEPS+=("$name skipped 0 0")
        FAILED=1
        return
    fi
    echo "== $name (at most ${limit}s) -> $OUT/$name.log"
    local t0 rc
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    STEPS+=("$name $rc $(($(date +%s) - t0)) $limit")
    tail -n 8 "$OUT/$name.log"
    if ((rc == 124 || rc == 137)); then
        echo "   $name: timed out after ${limit}s"
    fi
    ((rc != 0)) && FAILED=1
    echo "   $name: exit $rc after $(($(date +%s) - t0))s"
}

write_summary() {
    "$PY" - "$OUT/gpu_check.json" "$BUDGET_S" "$(($(date +%s) - START))" "$DRY_RUN" "${STEPS[@]}" <<'EOF'
import json, sys
path, budget, total, dry_run, *steps = sys.argv[1:]
rows = []
for s in steps:
    name, rc, secs, limit = s.split()
    rows.append({"step": name, "exit": rc if rc == "skipped" else int(rc), "seconds": int(secs), "limit_s": int(limit)})
ok = all(r["exit"] == 0 for r in rows)
summary = {"ok": ok, "dry_run": dry_run == "1", "budget_s": int(budget), "total_s": int(total), "steps": rows}
json.dump(summary, open(path, "w"), indent=2)
print(f"wrote {path}: {'all steps passed' if ok else 'FAILED'} in {total}s")
EOF
}

run_step preflight 60 "$PY" -c "
import sys, torch
print('torch', torch.__version__, 'cuda', torch.version.cuda)
if $DRY_RUN:
    print('dry run: CPU stand-ins for every step')
elif not torch.cuda.is_available():
    sys.exit('no CUDA device visible to torch: nothing to check')
else:
    print('gpu', torch.cuda.get_device_name(0), 'count', torch.cuda.device_count())
import shallowpi; print('shallowpi from', shallowpi.__file__)
"
command -v nvidia-smi >/dev/null && nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
if [[ ${STEPS[0]} != "preflight 0 "* ]]; then
    write_summary
    exit 1
fi

if ((DRY_RUN)); then
    PYTEST_MODE=(--collect-only)  # imports every cuda test module and lists its tests (conftest keeps them)
    BENCH=(-m shallowpi bench --preset tiny --compare 2,1 --device cpu --dtype bfloat16 --no-count-flops
        --warmup 1 --threads 1)
    GRAPH_MODES=engine,engine_nocompact
    COMPILED_MODES=engine,reference
    FOLD=(-m shallowpi bench --preset tiny --depth 2 --device cpu --dtype bfloat16 --no-count-flops --warmup 1
        --threads 1 --modes engine_unfolded,engine)
else
    PYTEST_MODE=(-rA)
    BENCH=(-m shallowpi bench --preset pi05 --compare 18,6 --device cuda --dtype bfloat16 --no-count-flops)
    GRAPH_MODES=engine,cuda_graph
    COMPILED_MODES=engine,compiled
    FOLD=(-m shallowpi bench --preset pi05 --depth 18 --device cuda --dtype bfloat16 --no-count-flops
        --modes cuda_graph_unfolded,cuda_graph)
fi

run_step cuda_tests 140 "$PY" -m pytest -m cuda -p no:cacheprovider -q "${PYTEST_MODE[@]}" \
    --junitxml "$OUT/cuda_tests.xml" tests

run_step bench_graph 90 "$PY" "${BENCH[@]}" --modes "$GRAPH_MODES" --out "$OUT/bench_pi05_bf16_graph.json"
run_step bench_fold 80 "$PY" "${FOLD[@]}" --out "$OUT/bench_pi05_bf16_fold.json"
run_step bench_compiled 150 "$PY" "${BENCH[@]}" --modes "$COMPILED_MODES" \
    --out "$OUT/bench_pi05_bf16_compiled.json"

if [[ -f benchmarks/trt_build.sh ]]; then
    export GPU_CHECK_SECONDS_LEFT=$(($(left) - 10))  # for the TensorRT script to size its own steps
    if ((DRY_RUN)); then
        run_step trt_build 60 bash -c 'bash -n benchmarks/trt_build.sh && "$1" benchmarks/trt_prepare.py summarize "$2"' \
            _ "$PY" "$OUT"
    else
        run_step trt_build "$GPU_CHECK_SECONDS_LEFT" bash benchmarks/trt_build.sh "$OUT"
    fi
fi

write_summary
exit "$FAILED"
