"""Peer side of the learning speed benchmark; runs in ./.venv-peers (d3rlpy 2.8.1).

Usage: python benchmarks/peers/d3rlpy_updates.py DATA.npz ALGO STEPS
ALGO: bc | iql | td3bc. Same data, [256, 256] networks, batch 256, one thread, CPU.
Prints {"sec_per_1k_steps": ...} (warm-up excluded).
"""

import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from d3rlpy_data import encoder, load_dataset


def main() -> None:
    path, algo, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    import d3rlpy
    import torch

    torch.set_num_threads(1)
    ds, enc = load_dataset(path), encoder()
    common = dict(batch_size=256, actor_encoder_factory=enc, critic_encoder_factory=enc)
    if algo == "bc":
        cfg = d3rlpy.algos.BCConfig(batch_size=256, encoder_factory=enc)
    elif algo == "iql":
        cfg = d3rlpy.algos.IQLConfig(value_encoder_factory=enc, **common)
    else:
        cfg = d3rlpy.algos.TD3PlusBCConfig(**common)
    a = cfg.create(device="cpu:0")
    a.build_with_dataset(ds)

    def run(n):
        for _ in range(n):
            batch = ds.sample_transition_batch(256)
            a.update(batch)

    run(50)  # warm-up
    t = time.perf_counter()
    run(steps)
    dt = time.perf_counter() - t
    print(
        json.dumps(
            {"sec_per_1k_steps": dt / steps * 1000, "d3rlpy": d3rlpy.__version__, "algo": algo}
        )
    )


if __name__ == "__main__":
    main()
