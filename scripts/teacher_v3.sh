#!/usr/bin/env bash
# Test bed v3's teacher: π0 on the fine image grid (`--preset testbed_fine`: 64 px renders, 8-px patches, 64
# tokens per camera), task loss, on the scripted MT10 demonstrations with the hand_task_goal state.
# Idempotent and resumable: collects once, then trains or resumes WORK/runs/teacher_fine. A restart point
# committed under results/testbed_attempts/fine_grid/restart (a checkpoint with its training_state) seeds a
# fresh WORK, so a later session on a new machine continues the same run bit for bit.
#
#   bash scripts/teacher_v3.sh [WORK]          # default WORK: outputs/teacher_v3
#   STEPS=12000 THREADS=2 bash scripts/teacher_v3.sh outputs/teacher_v3
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-outputs/teacher_v3}
STEPS=${STEPS:-12000}
THREADS=${THREADS:-2}
DATA=$WORK/data/mt10_64_task_goal
RUN=$WORK/runs/teacher_fine
RESTART=results/testbed_attempts/fine_grid/restart
PY=${PYTHON:-python}

if [ ! -f "$DATA/meta/info.json" ]; then
    $PY -m shallowpi collect --env metaworld --tasks mt10 --demos-per-task 100 --seed 0 --image-size 64 \
        --cameras corner4,gripperPOV --state hand_task_goal --workers 2 --no-progress --out "$DATA"
fi

if [ ! -e "$RUN/checkpoints/last" ] && [ -f "$RESTART/training_state/training_step.json" ]; then
    step=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['step'])" "$RESTART/training_state/training_step.json")
    name=$(printf "%06d" "$step")
    mkdir -p "$RUN/checkpoints"
    cp -r "$RESTART" "$RUN/checkpoints/$name"
    ln -sfn "$name" "$RUN/checkpoints/last"
    echo "seeded $RUN from the committed restart point (step $step)"
fi

resume=()
[ -e "$RUN/checkpoints/last" ] && resume=(--resume)
exec $PY -m shallowpi train --preset testbed_fine --dataset "$DATA" --steps "$STEPS" --batch-size 32 \
    --lr 3e-4 --end-lr 3e-5 --warmup-steps 300 --weight-decay 0.01 --save-every 500 --log-every 20 \
    --threads "$THREADS" --num-workers 2 --seed 0 --no-progress --out "$RUN" "${resume[@]}"
