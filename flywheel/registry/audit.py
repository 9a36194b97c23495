"""The audit log: an append-only, hash-chained JSON-lines file, and the source of truth for aliases.

Each line is one registry operation (register, promote, rollback, a refused promotion, ...) with
who/when/why, its alias moves `{alias, from, to}` and, for promotions, every gate's figures. Each
entry carries `seq` (1, 2, ...) and `prev`, the sha256 of the previous line, so a deleted,
reordered or edited line is detected by `verify_chain`. `aliases.json` is a cache of
`replay(entries)`: the log is appended (and fsynced) first, the cache replaced second, so a crash
between the two loses nothing (the next writer rebuilds the cache from the log).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

ALIASES = ("candidate", "staging", "production", "previous")
"""The aliases a version can carry; `previous` is what `rollback` restores."""

GENESIS = "sha256:" + "0" * 64
"""`prev` of the first entry."""


def line_hash(line: str) -> str:
    return "sha256:" + hashlib.sha256(line.rstrip("\n").encode()).hexdigest()


def read_entries(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(raw line, entry) pairs; a torn last line (a writer killed mid-write) is ignored."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    complete = lines[:-1]  # the part after the last newline is empty or torn
    out = []
    for i, raw in enumerate(complete):
        try:
            out.append((raw, json.loads(raw)))
        except ValueError as e:
            raise ValueError(f"{path}: line {i + 1} is not JSON ({e})") from None
    return out


def new_entry(
    *,
    seq: int,
    prev: str,
    op: str,
    who: str,
    why: str,
    moves: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    """An audit entry; `extra` carries version, target, gates, forced, decision..."""
    now = time.time()
    return {
        "seq": seq,
        "prev": prev,
        "op": op,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        + f".{int(now % 1 * 1e3):03d}Z",
        "unix": now,
        "who": who,
        "pid": os.getpid(),
        "why": why,
        "moves": moves,
        **extra,
    }


def replay(entries: list[dict[str, Any]]) -> tuple[dict[str, int], list[str]]:
    """Aliases after applying every entry's moves in order, and the inconsistencies found.

    A move whose `from` differs from the replayed value means two writers raced past the lock
    (a lost update); it is reported, and the move is applied anyway so later checks go on.
    """
    aliases: dict[str, int] = {}
    problems: list[str] = []
    for e in entries:
        for m in e.get("moves", []):
            if aliases.get(m["alias"]) != m["from"]:
                problems.append(
                    f"audit seq {e['seq']}: moves {m['alias']} from {m['from']} but it pointed "
                    f"at {aliases.get(m['alias'])} (lost update)"
                )
            if m["to"] is None:
                aliases.pop(m["alias"], None)
            else:
                aliases[m["alias"]] = m["to"]
    return aliases, problems


def verify_chain(pairs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Problems with seq numbering and the hash chain (empty when the log is intact)."""
    problems = []
    prev = GENESIS
    for i, (raw, e) in enumerate(pairs):
        if e.get("seq") != i + 1:
            problems.append(f"audit line {i + 1}: seq {e.get('seq')} (expected {i + 1})")
        if e.get("prev") != prev:
            problems.append(f"audit line {i + 1}: prev hash does not match line {i} (edited?)")
        prev = line_hash(raw)
    return problems
