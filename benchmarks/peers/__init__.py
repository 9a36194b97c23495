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


def to_d3rlpy_npz(cache: Any, path: Path) -> Path:
    """A TrainingCache as d3rlpy's MDPDataset arrays: observations concatenated in sorted key
    order, one row per action (an episode's final observation dropped), timeouts at truncated
    ends."""
    import numpy as np

    keys = sorted(cache.obs)
    obs = np.concatenate([cache.obs[k].reshape(len(cache.obs[k]), -1) for k in keys], 1)
    keep = np.ones(len(obs), bool)
    keep[cache.obs_start + cache.lengths] = False
    ends = cache.act_start + cache.lengths - 1
    timeouts = cache.truncated.copy()
    timeouts[ends] = ~cache.terminated[ends]
    np.savez(path, observations=obs[keep], actions=cache.action, rewards=cache.reward,
             terminals=cache.terminated.astype(np.float32), timeouts=timeouts.astype(np.float32))  # fmt: skip
    return path
