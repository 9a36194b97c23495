#!/usr/bin/env bash
# Install flywheel into ./.venv on a fresh machine.
# torch goes first, pinned to 2.13.0 (a local CPU wheel here): an unpinned torch, or one pulled
# in by another package, would fetch the multi-GB CUDA build. Then the project, constrained to
# versions known to work together (constraints.txt; see docs/install.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.flywheel-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import flywheel" 2>/dev/null; then
    exit 0  # already installed from these exact files
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_q() { .venv/bin/python -m pip install -q "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }
pip_q "torch==2.13.0"
pip_q -c constraints.txt -e ".[dev]"
.venv/bin/python -c "import torch, zarr, mujoco, prefect, cv2; assert torch.__version__.startswith('2.13.0'), torch.__version__" \
    || { echo "install check failed" >&2; exit 1; }
echo "$want" > "$stamp"
