#!/usr/bin/env bash
# A separate virtual environment for peer libraries whose pins clash with ours (d3rlpy 2.8.1 pins
# gymnasium==1.0.0; we use 1.4). Benchmarks run the peer in a subprocess from this venv, on the
# same data, in the same run. Usage: bash scripts/bench_env.sh  (creates ./.venv-peers)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-peers/bin/python ] || "$PY" -m venv .venv-peers
q() { .venv-peers/bin/python -m pip install -q "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }
q "torch==2.13.0"
q "d3rlpy==2.8.1" "numpy<3"
.venv-peers/bin/python -c "import d3rlpy; print('d3rlpy', d3rlpy.__version__)"
