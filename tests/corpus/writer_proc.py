"""A writer process for kill and concurrency tests: appends synthetic episodes and reports ids.

Usage: python -m tests.corpus.writer_proc CORPUS FIRST_SEED COUNT [CAMERAS]
Prints one line per commit: `<seed> <episode_id> <duplicate>`.
"""

from __future__ import annotations

import sys

from flywheel.corpus import Corpus
from flywheel.corpus.synthetic import synthetic_episode


def main() -> None:
    path, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cams = tuple(c for c in (sys.argv[4] if len(sys.argv) > 4 else "").split(",") if c)
    c = Corpus.open_or_create(path)
    for seed in range(first, first + count):
        r = c.append(synthetic_episode(seed, length=20 + seed % 7, cameras=cams, image_size=32))
        print(seed, r.episode_id, int(r.duplicate), flush=True)


if __name__ == "__main__":
    main()
