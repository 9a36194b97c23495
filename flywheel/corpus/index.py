"""The episode index: one SQLite row per committed episode, the commit point of every append.

Why SQLite: listing and filtering 100k episodes must not open 100k Zarr groups; writers in
several processes need a transaction to check a content hash and publish an episode as one step;
and a writer killed mid-commit must leave the index as it was. SQLite in WAL mode gives all three
from the standard library. Each row gets a monotonically increasing `seq` inside the write
transaction, so "the index at generation G" (rows with seq <= G) is a reproducible snapshot.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    episode_id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    task TEXT NOT NULL,
    robot TEXT NOT NULL,
    success INTEGER,
    length INTEGER NOT NULL,
    return REAL NOT NULL,
    policy_version TEXT,
    operator TEXT,
    control_hz REAL NOT NULL,
    created REAL NOT NULL,
    source_hash TEXT NOT NULL UNIQUE,
    meta TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ep_source ON episodes(source);
CREATE INDEX IF NOT EXISTS ep_task ON episodes(task, success);
CREATE INDEX IF NOT EXISTS ep_created ON episodes(created);
CREATE INDEX IF NOT EXISTS ep_policy ON episodes(policy_version);
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_COLUMNS = (
    "seq, episode_id, source, task, robot, success, length, return, policy_version, operator, "
    "control_hz, created, source_hash, meta"
)


@dataclass(frozen=True, kw_only=True)
class IndexEntry:
    """What the index knows of one episode without opening its group."""

    episode_id: str
    source: str
    task: str
    robot: str
    success: bool | None
    length: int
    return_: float
    policy_version: str | None
    operator: str | None
    control_hz: float
    created: float
    source_hash: str
    meta: dict[str, Any] = field(default_factory=dict)
    """The episode's full metadata (stats, features, info), as stored in its group."""
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        """A listing row (the big `meta` left out)."""
        return {
            "episode_id": self.episode_id,
            "seq": self.seq,
            "source": self.source,
            "task": self.task,
            "robot": self.robot,
            "success": self.success,
            "length": self.length,
            "return": self.return_,
            "policy_version": self.policy_version,
            "operator": self.operator,
            "created": self.created,
        }


@dataclass(frozen=True, kw_only=True)
class Filter:
    """Which episodes a listing, snapshot or cache takes; None means any."""

    source: str | None = None
    task: str | None = None
    success: bool | None = None
    policy_version: str | None = None
    since: float | None = None
    """Created at or after this UNIX time."""
    until: float | None = None
    """Created before this UNIX time."""

    def where(self) -> tuple[str, list[Any]]:
        """SQL WHERE clause (without the keyword) and its parameters."""
        clauses, params = ["1=1"], []
        for col in ("source", "task", "policy_version"):
            if getattr(self, col) is not None:
                clauses.append(f"{col} = ?")
                params.append(getattr(self, col))
        if self.success is not None:
            clauses.append("success = ?")
            params.append(int(self.success))
        if self.since is not None:
            clauses.append("created >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("created < ?")
            params.append(self.until)
        return " AND ".join(clauses), params

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _row(r: tuple) -> IndexEntry:
    return IndexEntry(
        seq=r[0],
        episode_id=r[1],
        source=r[2],
        task=r[3],
        robot=r[4],
        success=None if r[5] is None else bool(r[5]),
        length=r[6],
        return_=r[7],
        policy_version=r[8],
        operator=r[9],
        control_hz=r[10],
        created=r[11],
        source_hash=r[12],
        meta=json.loads(r[13]),
    )


class EpisodeIndex:
    """The SQLite file of one corpus. Cheap to create; opens a connection per use."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._cons: dict[tuple[int, int], sqlite3.Connection] = {}

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection kept per process and thread (opening one costs more than a query).

        Keyed by pid too, so a forked child never uses its parent's connection.
        """
        key = (os.getpid(), threading.get_ident())
        con = self._cons.get(key)
        if con is None:
            con = sqlite3.connect(self.path, timeout=120.0, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            self._cons[key] = con
        yield con

    def close(self) -> None:
        """Close this process's connections (before the file is replaced)."""
        for key, con in list(self._cons.items()):
            if key[0] == os.getpid():
                con.close()
            del self._cons[key]

    def create(self) -> None:
        """Create tables and a fresh epoch (a new epoch marks a rebuilt index)."""
        with self.connect() as con:
            con.executescript(SCHEMA)
            con.execute(
                "INSERT OR IGNORE INTO info(key, value) VALUES ('epoch', ?)", (uuid.uuid4().hex,)
            )

    def epoch(self) -> str:
        with self.connect() as con:
            return con.execute("SELECT value FROM info WHERE key='epoch'").fetchone()[0]

    def generation(self) -> int:
        """The seq of the newest entry: names the index's current state for a snapshot."""
        with self.connect() as con:
            return int(con.execute("SELECT COALESCE(MAX(seq), 0) FROM episodes").fetchone()[0])

    def find_hash(self, source_hash: str) -> str | None:
        """Episode id already holding this content, if any."""
        with self.connect() as con:
            r = con.execute(
                "SELECT episode_id FROM episodes WHERE source_hash = ?", (source_hash,)
            ).fetchone()
        return None if r is None else r[0]

    def commit(self, entry: IndexEntry, publish: Callable[[], None]) -> str | None:
        """Publish and index one episode atomically with respect to other committers.

        Inside one write transaction: check the hash, run `publish` (the rename into place),
        insert the row. Returns None on success, or the id of the episode that already holds
        this content (then `publish` is not run). A process killed after `publish` but before
        the insert leaves a complete but unindexed group, which `repair` adopts.
        """
        with self.connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                r = con.execute(
                    "SELECT episode_id FROM episodes WHERE source_hash = ?", (entry.source_hash,)
                ).fetchone()
                if r is not None:
                    con.execute("ROLLBACK")
                    return r[0]
                publish()
                self._insert(con, entry)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return None

    @staticmethod
    def _insert(con: sqlite3.Connection, e: IndexEntry) -> None:
        con.execute(
            "INSERT INTO episodes (episode_id, source, task, robot, success, length, return, "
            "policy_version, operator, control_hz, created, source_hash, meta) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                e.episode_id,
                e.source,
                e.task,
                e.robot,
                None if e.success is None else int(e.success),
                e.length,
                e.return_,
                e.policy_version,
                e.operator,
                e.control_hz,
                e.created,
                e.source_hash,
                json.dumps(e.meta),
            ),
        )

    def query(
        self, flt: Filter | None = None, *, generation: int | None = None, limit: int | None = None
    ) -> list[IndexEntry]:
        """Entries matching `flt`, as of `generation` (default: now), in commit order."""
        where, params = (flt or Filter()).where()
        if generation is not None:
            where += " AND seq <= ?"
            params.append(generation)
        sql = f"SELECT {_COLUMNS} FROM episodes WHERE {where} ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self.connect() as con:
            return [_row(r) for r in con.execute(sql, params)]

    def ids(self) -> set[str]:
        """All indexed episode ids (one query; used by verify instead of opening groups)."""
        with self.connect() as con:
            return {r[0] for r in con.execute("SELECT episode_id FROM episodes")}

    def hashes(self) -> set[str]:
        with self.connect() as con:
            return {r[0] for r in con.execute("SELECT source_hash FROM episodes")}

    def summary(self) -> dict[str, Any]:
        """Counts by source and task, and totals, from aggregates (no per-episode rows)."""
        with self.connect() as con:
            n, steps = con.execute(
                "SELECT COUNT(*), COALESCE(SUM(length), 0) FROM episodes"
            ).fetchone()
            by_source = dict(con.execute("SELECT source, COUNT(*) FROM episodes GROUP BY source"))
            by_task = {
                t: {"episodes": c, "successes": s or 0, "frames": f}
                for t, c, s, f in con.execute(
                    "SELECT task, COUNT(*), SUM(success), SUM(length) FROM episodes GROUP BY task"
                )
            }
        return {"episodes": n, "steps": steps, "by_source": by_source, "by_task": by_task}

    def remove(self, episode_ids: list[str]) -> None:
        """Drop rows (repair of corrupt episodes); snapshots that held them can't be replayed."""
        with self.connect() as con:
            con.executemany(
                "DELETE FROM episodes WHERE episode_id = ?", [(i,) for i in episode_ids]
            )

    def rebuild(self, entries: list[IndexEntry]) -> None:
        """Write a new index from `entries` beside the old one, then swap it in with one rename.

        The caller holds the corpus's exclusive lock, so no committer is inside a transaction.
        """
        tmp = self.path.with_name(self.path.name + ".rebuild")
        for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            p.unlink(missing_ok=True)
        con = sqlite3.connect(tmp, isolation_level=None)
        try:
            con.executescript(SCHEMA)
            con.execute("INSERT INTO info(key, value) VALUES ('epoch', ?)", (uuid.uuid4().hex,))
            con.execute("BEGIN")
            for e in sorted(entries, key=lambda e: (e.created, e.episode_id)):
                self._insert(con, e)
            con.execute("COMMIT")
        finally:
            con.close()
        if self.path.exists():  # fold the old WAL in and drop it, so it can't replay onto the new
            with self.connect() as old:
                old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                old.execute("PRAGMA journal_mode=DELETE")
        self.close()
        tmp.replace(self.path)
