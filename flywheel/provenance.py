"""Which code made an artifact: the package version, and the git commit when run from a checkout.

A version number alone does not say which code trained a bundle while the package is developed
in place (every commit is "0.1.0"), so lineage records the commit too, and whether the checkout
had uncommitted changes (then the commit is only an approximation). Outside a git checkout (an
installed wheel), or without git, both are None.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

from flywheel import __version__

PACKAGE_DIR = Path(__file__).resolve().parent


def code_version(code_dir: Path | None = None) -> dict[str, Any]:
    """{flywheel: package version, git_sha: commit or None, git_dirty: bool or None}.

    `code_dir`: a folder of the code (default: this package), looked up once per process.
    """
    sha, dirty = _git_state(code_dir.resolve() if code_dir is not None else PACKAGE_DIR)
    return {"flywheel": __version__, "git_sha": sha, "git_dirty": dirty}


@functools.lru_cache(maxsize=8)
def _git_state(code_dir: Path) -> tuple[str | None, bool | None]:
    """(HEAD commit, uncommitted changes to tracked files) if `code_dir` is tracked by git."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(code_dir), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()

    try:
        # the folder itself must be tracked: a venv inside some other repository is not a checkout
        if not git("ls-files", "--", "."):
            return None, None
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):  # no git, not a repository, no commit yet
        return None, None
    return sha, dirty
