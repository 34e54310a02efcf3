#!/usr/bin/env bash
# Build and time TensorRT engines from shallowpi's ONNX export (docs/tensorrt.md).
#
#   benchmarks/trt_build.sh OUTDIR                 # teacher (fp32 + fp16) and full-size pi0.5 depth 6 (fp16)
#   TRT_MODELS=teacher benchmarks/trt_build.sh OUTDIR
#
# Exports the graphs (python -m shallowpi export / benchmarks/trt_prepare.py), builds one engine per graph
# and precision with trtexec, times them (median GPU compute time), and writes OUTDIR/trt_timing.json with
# the policy latency prefix + steps x denoise. Without trtexec it says so and exits 0 (nothing to build).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
OUT=$1
TRTEXEC=${TRTEXEC:-$(command -v trtexec || true)}
if [[ -z "$TRTEXEC" && -x /usr/src/tensorrt/bin/trtexec ]]; then
    TRTEXEC=/usr/src/tensorrt/bin/trtexec  # where JetPack and the TensorRT containers put it
fi
if [[ -z "$TRTEXEC" ]]; then
    echo "trt_build.sh: trtexec not found (install TensorRT or set TRTEXEC=/path/to/trtexec): skipping TensorRT engines"
    exit 0
fi
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
"$PY" benchmarks/trt_prepare.py export "$OUT" --models "${TRT_MODELS:-teacher,pi05_d6}"

# TensorRT >= 9 obeys the ONNX graph's own types with --stronglyTyped: an fp16 export keeps its fp32 islands
# (norms, softmax, adaRMS, time MLP, projections). Older TensorRT only has --fp16, which may run those in fp16.
if "$TRTEXEC" --help 2>&1 | grep -q -- "--stronglyTyped"; then
    FP16_FLAGS=(--stronglyTyped)
else
    echo "trt_build.sh: this TensorRT has no --stronglyTyped; building with --fp16 (fp32 islands not guaranteed)"
    FP16_FLAGS=(--fp16)
fi

build() {  # build DIR GRAPH MODE FLAGS...: one engine, its build log and its timing log
    local dir=$1 graph=$2 mode=$3
    shift 3
    local inputs="" f
    for f in "$dir/inputs/$graph"/*.bin; do
        inputs+="${inputs:+,}$(basename "$f" .bin):$f"
    done
    echo "== $(basename "$dir") $graph ($mode)"
    if "$TRTEXEC" --onnx="$dir/$graph.onnx" --saveEngine="$dir/$graph.$mode.plan" --loadInputs="$inputs" \
        --warmUp=500 --iterations=50 --avgRuns=10 "$@" >"$dir/trtexec_${graph}_${mode}.log" 2>&1; then
        grep -E "GPU Compute Time" "$dir/trtexec_${graph}_${mode}.log" | tail -1 || true
    else
        echo "   trtexec failed: see $dir/trtexec_${graph}_${mode}.log"
        tail -5 "$dir/trtexec_${graph}_${mode}.log"
    fi
}

for dir in "$OUT"/*/; do
    dir=${dir%/}
    [[ -f "$dir/manifest.json" ]] || continue
    for graph in prefix denoise; do
        case "$dir" in
            *_float16) build "$dir" "$graph" fp16 "${FP16_FLAGS[@]}" ;;
            *_float32) build "$dir" "$graph" fp32 ;;
        esac
    done
done
"$PY" benchmarks/trt_prepare.py summarize "$OUT"
