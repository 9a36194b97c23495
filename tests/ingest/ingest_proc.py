"""An ingest process for the kill test: prints one line per source episode as it finishes.

Usage: python -m tests.ingest.ingest_proc CORPUS SRC...
Prints `<outcome> <source>` (accepted, duplicate, quarantined), flushed.
"""

from __future__ import annotations

import sys

from flywheel.corpus import Corpus
from flywheel.ingest import ingest


def main() -> None:
    corpus = Corpus.open_or_create(sys.argv[1])
    ingest(
        sys.argv[2:], corpus, progress=lambda source, outcome: print(outcome, source, flush=True)
    )


if __name__ == "__main__":
    main()
