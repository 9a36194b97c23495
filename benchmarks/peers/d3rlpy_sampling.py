"""Peer side of the corpus sampling benchmark; runs in ./.venv-peers (d3rlpy pins gymnasium 1.0).

Usage: python benchmarks/peers/d3rlpy_sampling.py ARRAYS.npz BATCH N_BATCHES
Loads the same transitions the flywheel benchmark samples, builds d3rlpy's MDPDataset (a replay
buffer) from them, and times `sample_transition_batch`. Prints one JSON object.
"""

import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np


def main() -> None:
    path, batch, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    import d3rlpy
    import torch

    torch.set_num_threads(1)
    d = np.load(path)
    ds = d3rlpy.dataset.MDPDataset(
        observations=d["observations"],
        actions=d["actions"],
        rewards=d["rewards"],
        terminals=d["terminals"],
        timeouts=d["timeouts"],
    )
    for _ in range(20):  # warm-up
        ds.sample_transition_batch(batch)
    t = time.perf_counter()
    for _ in range(n):
        ds.sample_transition_batch(batch)
    dt = time.perf_counter() - t
    print(json.dumps({"transitions_per_s": batch * n / dt, "d3rlpy": d3rlpy.__version__}))


if __name__ == "__main__":
    main()
