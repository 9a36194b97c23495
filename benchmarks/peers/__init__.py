"""Peer libraries whose pins clash with ours run from ./.venv-peers (scripts/bench_env.sh).

Each peer script prints one JSON object as its last line; `run_peer` returns it, or None (with
the peer's error on stderr) so a benchmark can report without the peer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PEER_PY = ROOT / ".venv-peers" / "bin" / "python"


def available() -> bool:
    """True when the peers' virtual environment exists."""
    return PEER_PY.exists()


def run_peer(script: str, *args: object, timeout: float = 900) -> dict[str, Any] | None:
    """Run `benchmarks/peers/<script>` in the peers' venv; its last JSON line, or None."""
    out = subprocess.run(
        [str(PEER_PY), str(ROOT / "benchmarks" / "peers" / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])
