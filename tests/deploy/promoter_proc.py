"""A promoter process for the concurrency test: waits for a start file, then promotes in a loop.

    python -m tests.deploy.promoter_proc REGISTRY START_FILE ROUNDS V1 V2 ...
Creates START_FILE.ready-PID once imported, so the test can start every process at once.
Prints one JSON line per promotion: version, decision, attempts, audit_seq, start/end times.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from flywheel.registry import Registry, promote
from tests.deploy.conftest import GATES, make_env


def main() -> None:
    root, start, rounds, *versions = sys.argv[1:]
    torch.set_num_threads(1)
    reg = Registry(Path(root))
    make_env("reach", "none").close()  # first-call costs (MuJoCo, imports) before the race
    reg.load(int(versions[0]))
    Path(f"{start}.ready-{os.getpid()}").touch()
    while not Path(start).exists():
        time.sleep(0.005)
    for i in range(int(rounds)):
        v = int(versions[i % len(versions)])
        t0 = time.time()
        rep = promote(reg, v, "production", make_env=make_env, config=GATES, attempts=10)
        print(
            json.dumps(
                {
                    "version": v,
                    "decision": rep.decision,
                    "attempts": rep.attempts,
                    "incumbent": rep.incumbent,
                    "t0": t0,
                    "t1": time.time(),
                    "pid": os.getpid(),
                    "audit_seq": rep.audit_seq,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
