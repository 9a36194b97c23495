"""Peer side of the learning quality benchmark; runs in ./.venv-peers (d3rlpy 2.8.1).

Usage: python benchmarks/peers/d3rlpy_train.py DATA.npz ALGO STEPS OUT.pt
ALGO: iql | td3bc. Trains on the same transitions our multi-step trains on ([256, 256] networks,
batch 256, standardised observations, one CPU thread) and saves the deterministic policy as
TorchScript (observations concatenated in sorted key order -> action), which the benchmark
evaluates in our simulator. Prints {"seconds": ...}.
"""

import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from d3rlpy_data import encoder, load_dataset


def main() -> None:
    path, algo, steps, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    import d3rlpy
    import torch

    torch.set_num_threads(1)
    d3rlpy.seed(0)
    ds, enc = load_dataset(path), encoder()
    common = dict(
        batch_size=256,
        actor_encoder_factory=enc,
        critic_encoder_factory=enc,
        observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(),
    )
    if algo == "iql":
        cfg = d3rlpy.algos.IQLConfig(value_encoder_factory=enc, **common)
    else:
        cfg = d3rlpy.algos.TD3PlusBCConfig(**common)
    a = cfg.create(device="cpu:0")
    t = time.perf_counter()
    a.fit(ds, n_steps=steps, n_steps_per_epoch=steps, show_progress=False, save_interval=10**9,
          logger_adapter=d3rlpy.logging.NoopAdapterFactory())  # fmt: skip
    a.save_policy(out)
    print(json.dumps({"seconds": time.perf_counter() - t, "algo": algo, "steps": steps}))


if __name__ == "__main__":
    main()
