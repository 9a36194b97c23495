#!/usr/bin/env bash
# Run the test suite (default: everything not marked slow). Extra args go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MUJOCO_GL=${MUJOCO_GL:-egl}
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests for: $*" >&2
    rc=0
fi
exit "$rc"
