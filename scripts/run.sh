#!/usr/bin/env bash
# The main job on the embedded default: local files under $FLYWHEEL_HOME (default ./.flywheel).
# For now: create the corpus, write a few episodes, show what is in it.
set -euo pipefail
cd "$(dirname "$0")/.."
export FLYWHEEL_HOME=${FLYWHEEL_HOME:-$PWD/.flywheel} OMP_NUM_THREADS=1 MUJOCO_GL=${MUJOCO_GL:-egl}
fw=.venv/bin/flywheel
$fw corpus init
$fw corpus synth --episodes 5 --cameras front,wrist
$fw corpus verify
$fw corpus info
