#!/usr/bin/env bash
# The main job on the embedded default: local files under $FLYWHEEL_HOME (default ./.flywheel),
# Prefect's ephemeral server, MuJoCo sim. Two full flywheel rounds on `lift`:
#   collect (noisy expert demos, then the deployed policy's rollouts) -> BC (one-step)
#   -> multi-step offline (gated) -> targeted online SAC (RLPD-style) -> evaluate on fixed seeds -> deploy.
# Ends with a table of success per round and stage; the report is in $FLYWHEEL_HOME/reports.
set -euo pipefail
cd "$(dirname "$0")/.."
export FLYWHEEL_HOME=${FLYWHEEL_HOME:-$PWD/.flywheel} OMP_NUM_THREADS=1 MUJOCO_GL=${MUJOCO_GL:-egl}
.venv/bin/flywheel run --rounds "${ROUNDS:-2}" --tasks "${TASKS:-lift}" "$@"
.venv/bin/flywheel corpus verify
.venv/bin/flywheel corpus info
