#!/usr/bin/env bash
# The main job on the embedded default: local files under $FLYWHEEL_HOME (default ./.flywheel),
# MuJoCo sim. One turn of the loop, step by step (issue 7 turns this into `flywheel run`):
#   collect noisy expert demos -> BC (one-step) -> multi-step offline (gated) -> online PPO
#   -> evaluate each on the same seeds -> show the corpus (now holding the online episodes too).
set -euo pipefail
cd "$(dirname "$0")/.."
export FLYWHEEL_HOME=${FLYWHEEL_HOME:-$PWD/.flywheel} OMP_NUM_THREADS=1 MUJOCO_GL=${MUJOCO_GL:-egl}
TASK=${TASK:-lift} STEPS=${STEPS:-2000} ENV_STEPS=${ENV_STEPS:-20000} EPISODES=${EPISODES:-50}
fw=.venv/bin/flywheel
field() { .venv/bin/python -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

$fw corpus init
$fw collect --task "$TASK" --episodes "$EPISODES" --noise 0.6 --seed 0
bc=$($fw train --task "$TASK" --algo bc --steps "$STEPS" --json | field bundle)
ms=$($fw train --task "$TASK" --algo multistep --steps "$STEPS" --json | field bundle)
online=$($fw refine "$ms" --task "$TASK" --env-steps "$ENV_STEPS" --json | field bundle)
for stage in bc ms online; do
    printf '%-8s success %s\n' "$stage" "$($fw eval "${!stage}" --task "$TASK" --episodes 50 --seed 7 --json | field success_rate)"
done
$fw corpus verify
$fw corpus info
