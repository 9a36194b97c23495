"""The policy registry: immutable numbered versions of bundles, aliases, and their audit log.

    $FLYWHEEL_HOME/registry/
      registry.lock          flock held by every writer (register, alias moves, episode reports)
      audit.jsonl            append-only, hash-chained log of every operation (source of truth)
      aliases.json           cache of the aliases replayed from the log, replaced atomically
      versions/v0001/
        bundle/              a verified copy of the registered bundle (read-only files)
        record.json          version, hashes, task, lineage summary, who/when registered
      evals/v0001/*.json     evaluation results (one file per task/variation/episodes/seeds)
      episodes/v0001.jsonl   real episodes run by controllers (canary evidence, safety stops)
      exports/v0001/onnx/    exported graphs with their parity reports (see flywheel.deploy)

A version never changes after registration: its folder is renamed into place complete, and
everything learnt about it later (evaluations, episodes, exports) lives beside it, not in it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flywheel.home import flywheel_home
from flywheel.policies import Bundle, BundleError, load_bundle
from flywheel.registry import audit
from flywheel.registry.audit import ALIASES
from flywheel.registry.files import (
    append_line,
    flocked,
    fsync_dir,
    fsync_tree,
    identity,
    write_json_atomic,
)


class RegistryError(Exception):
    """A registry operation that cannot be done; the message says which version/alias and why."""


class ConflictError(RegistryError):
    """An alias moved between reading it and moving it (another process promoted first)."""


@dataclass(frozen=True)
class VersionRecord:
    """What the registry knows about a version at registration; never changes afterwards."""

    version: int
    bundle_hash: str
    schema_hash: str
    normalizer_hash: str
    task: str
    control_hz: float
    registered_at: str
    registered_by: str
    source: str
    lineage: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse_version(ref: str | int) -> int | None:
    """`3`, `"3"`, `"v3"`, `"v0003"` -> 3; anything else (an alias) -> None."""
    if isinstance(ref, int):
        return ref
    s = ref.strip().lower().removeprefix("v")
    return int(s) if s.isdigit() else None


def vname(version: int) -> str:
    return f"v{version:04d}"


def default_registry_root() -> Path:
    return flywheel_home() / "registry"


class Registry:
    """A registry folder; safe to use from many processes at once."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_registry_root()
        self.lock_path = self.root / "registry.lock"
        self.audit_path = self.root / "audit.jsonl"
        self.aliases_path = self.root / "aliases.json"
        self.versions_dir = self.root / "versions"

    # ------------------------------------------------------------------ layout

    def _ensure(self) -> None:
        for d in (self.root, self.versions_dir, self.root / ".staging"):
            d.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The registry's write lock (exclusive, blocking)."""
        self._ensure()
        with flocked(self.lock_path, exclusive=True):
            yield

    def version_dir(self, version: int) -> Path:
        return self.versions_dir / vname(version)

    def bundle_path(self, version: int) -> Path:
        return self.version_dir(version) / "bundle"

    def evals_dir(self, version: int) -> Path:
        return self.root / "evals" / vname(version)

    def exports_dir(self, version: int) -> Path:
        return self.root / "exports" / vname(version)

    def episodes_path(self, version: int) -> Path:
        return self.root / "episodes" / f"{vname(version)}.jsonl"

    # ------------------------------------------------------------------ versions

    def version_numbers(self) -> list[int]:
        if not self.versions_dir.is_dir():
            return []
        out = []
        for p in self.versions_dir.iterdir():
            n = parse_version(p.name)
            if n is not None and (p / "record.json").is_file():
                out.append(n)
        return sorted(out)

    def record(self, version: int) -> VersionRecord:
        path = self.version_dir(version) / "record.json"
        try:
            return VersionRecord(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise RegistryError(
                f"{self.root}: no version {version} (have {self.version_numbers()})"
            ) from None
        except (ValueError, TypeError) as e:
            raise RegistryError(f"{path}: unreadable version record ({e})") from None

    def versions(self) -> list[VersionRecord]:
        return [self.record(v) for v in self.version_numbers()]

    def load(self, ref: str | int, *, with_value: bool = False) -> Bundle:
        """Load a version's bundle, re-checking every file hash (a changed byte is refused)."""
        version = self.resolve(ref)
        bundle = load_bundle(self.bundle_path(version), with_value=with_value)
        want = self.record(version).bundle_hash
        if bundle.content_hash != want:
            raise BundleError(
                f"{self.bundle_path(version)}: bundle hash {bundle.content_hash} differs from "
                f"the one registered for v{version} ({want}); the registry copy was replaced"
            )
        return bundle

    def resolve(self, ref: str | int) -> int:
        """A version number from `3`, `v3` or an alias name; RegistryError if there is none."""
        n = parse_version(ref)
        if n is not None:
            if n not in self.version_numbers():
                raise RegistryError(f"{self.root}: no version {n} (have {self.version_numbers()})")
            return n
        if ref not in ALIASES:
            raise RegistryError(f"{ref!r} is neither a version (3, v3) nor an alias {ALIASES}")
        aliases = self.aliases()
        if ref not in aliases:
            raise RegistryError(f"{self.root}: alias {ref!r} points at no version yet")
        return aliases[ref]

    def register(
        self,
        bundle: str | Path,
        *,
        why: str = "registered",
        who: str | None = None,
        parent: int | None = None,
        set_candidate: bool = True,
    ) -> tuple[VersionRecord, bool]:
        """Copy a bundle in as the next version; returns (record, created).

        The bundle is loaded (refusing pickles and tampering) before anything is written, copied
        to a staging folder and loaded again there (the copy must have the same hash), then
        renamed into place under the lock. Registering the same content twice returns the
        existing version (created=False). The new version becomes `candidate` unless told not to.
        """
        src = Path(bundle)
        b = load_bundle(src, with_value=False)  # BundleError names the file and the reason
        existing = self._find_hash(b.content_hash)
        if existing is not None:
            return self.record(existing), False
        self._ensure()
        stage = self.root / ".staging" / uuid.uuid4().hex
        shutil.copytree(src, stage / "bundle")
        copy = load_bundle(stage / "bundle", with_value=False)
        if copy.content_hash != b.content_hash:
            shutil.rmtree(stage, ignore_errors=True)
            raise BundleError(f"{src}: changed while it was being registered; try again")
        lineage = self._lineage(b, parent)
        who = who or identity()
        try:
            with self.locked():
                existing = self._find_hash(b.content_hash)
                if existing is not None:
                    return self.record(existing), False
                version = max(self.version_numbers(), default=0) + 1
                rec = VersionRecord(
                    version=version,
                    bundle_hash=b.content_hash,
                    schema_hash=b.schema["hash"],
                    normalizer_hash=b.normalizer.fingerprint(),
                    task=b.schema["task"],
                    control_hz=float(b.schema["control_hz"]),
                    registered_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    registered_by=who,
                    source=str(src.resolve()),
                    lineage=lineage,
                )
                (stage / "record.json").write_text(json.dumps(rec.to_json(), indent=1))
                _read_only(stage)
                fsync_tree(stage)
                os.rename(stage, self.version_dir(version))
                fsync_dir(self.versions_dir)
                moves = {"candidate": version} if set_candidate else {}
                self._append(op="register", who=who, why=why, moves=moves, version=version)
                return rec, True
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)

    def _find_hash(self, bundle_hash: str) -> int | None:
        for v in self.version_numbers():
            if self.record(v).bundle_hash == bundle_hash:
                return v
        return None

    def _lineage(self, b: Bundle, parent: int | None) -> dict[str, Any]:
        """The lineage summary a version carries: data, parent, algorithm/config, code version."""
        lin = b.lineage
        snap = lin.get("snapshot") or {}
        if parent is None and lin.get("parent_hash"):
            parent = self._find_hash(lin["parent_hash"])
        if parent is None and lin.get("parent"):
            for v in self.version_numbers():
                if self.record(v).source == str(Path(lin["parent"]).resolve()):
                    parent = v
        return {
            "algorithm": lin.get("algorithm"),
            "config": lin.get("config"),
            "seed": lin.get("seed"),
            "run_id": lin.get("run_id"),
            "snapshot": snap or None,
            "episode_set_hash": snap.get("episode_set_hash"),
            "parent_version": parent,
            "parent_bundle": lin.get("parent"),
            "code_version": lin.get("environment"),
            "metrics": lin.get("metrics"),
        }

    # ------------------------------------------------------------------ aliases and the audit log

    def aliases(self) -> dict[str, int]:
        """Alias -> version, as of the last complete audit entry."""
        try:
            doc = json.loads(self.aliases_path.read_text())
        except (FileNotFoundError, ValueError):
            doc = None
        pairs = audit.read_entries(self.audit_path)
        if doc is not None and doc.get("seq") == len(pairs):
            return {k: int(v) for k, v in doc["aliases"].items()}
        return audit.replay([e for _, e in pairs])[0]  # the cache is behind: the log decides

    def audit_entries(self) -> list[dict[str, Any]]:
        return [e for _, e in audit.read_entries(self.audit_path)]

    def move(
        self,
        moves: dict[str, int | None],
        *,
        op: str,
        why: str,
        who: str | None = None,
        expect: dict[str, int | None] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Move aliases atomically (all or none) and log it; returns the audit entry.

        `expect` is a compare-and-swap guard: if any alias named there no longer points where
        the caller saw it (someone else promoted meanwhile), nothing moves and ConflictError is
        raised, so a decision made against an old incumbent is never applied to a new one.
        """
        for alias, version in moves.items():
            if alias not in ALIASES:
                raise RegistryError(f"unknown alias {alias!r}; aliases are {ALIASES}")
            if version is not None and version not in self.version_numbers():
                raise RegistryError(f"{self.root}: no version {version} to point {alias} at")
        with self.locked():
            current = self._aliases_locked()
            if expect is not None:
                changed = {a: (v, current.get(a)) for a, v in expect.items() if current.get(a) != v}
                if changed:
                    desc = ", ".join(f"{a} was {o} now {n}" for a, (o, n) in changed.items())
                    raise ConflictError(f"aliases moved meanwhile: {desc}")
            return self._append(op=op, who=who or identity(), why=why, moves=moves, **extra)

    def log(self, *, op: str, why: str, who: str | None = None, **extra: Any) -> dict[str, Any]:
        """Record an operation that moved nothing (a refused promotion, a controller fallback)."""
        with self.locked():
            return self._append(op=op, who=who or identity(), why=why, moves={}, **extra)

    def _aliases_locked(self) -> dict[str, int]:
        return audit.replay([e for _, e in audit.read_entries(self.audit_path)])[0]

    def _append(
        self, *, op: str, who: str, why: str, moves: dict[str, int | None], **extra: Any
    ) -> dict[str, Any]:
        """Append one entry and refresh the alias cache; the caller holds the lock."""
        self._truncate_torn_tail()
        pairs = audit.read_entries(self.audit_path)
        current = audit.replay([e for _, e in pairs])[0]
        move_list = [
            {"alias": a, "from": current.get(a), "to": v}
            for a, v in moves.items()
            if current.get(a) != v
        ]
        prev = audit.line_hash(pairs[-1][0]) if pairs else audit.GENESIS
        entry = audit.new_entry(
            seq=len(pairs) + 1, prev=prev, op=op, who=who, why=why, moves=move_list, **extra
        )
        append_line(self.audit_path, json.dumps(entry, sort_keys=True, default=str))
        after = audit.replay([e for _, e in pairs] + [entry])[0]
        write_json_atomic(
            self.aliases_path, {"seq": entry["seq"], "aliases": after, "updated": entry["time"]}
        )
        return entry

    def _truncate_torn_tail(self) -> None:
        """Drop a partial last line left by a writer killed mid-append (only under the lock)."""
        try:
            data = self.audit_path.read_bytes()
        except FileNotFoundError:
            return
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(self.audit_path, "r+b") as f:
                f.truncate(keep)
                os.fsync(f.fileno())

    def verify(self) -> list[str]:
        """Everything inconsistent in the registry (empty when healthy)."""
        pairs = audit.read_entries(self.audit_path)
        problems = audit.verify_chain(pairs)
        replayed, lost = audit.replay([e for _, e in pairs])
        problems += lost
        try:
            cache = json.loads(self.aliases_path.read_text())
            if cache.get("seq") == len(pairs) and cache.get("aliases") != replayed:
                problems.append(f"{self.aliases_path}: differs from the audit log's replay")
        except FileNotFoundError:
            if pairs:
                problems.append(f"{self.aliases_path}: missing")
        known = set(self.version_numbers())
        for alias, v in replayed.items():
            if v not in known:
                problems.append(f"alias {alias} points at v{v}, which does not exist")
        for v in known:
            try:
                self.load(v)
            except (BundleError, RegistryError) as e:
                problems.append(f"v{v}: {e}")
        return problems

    # ------------------------------------------------------------------ evaluations and episodes

    def save_eval(self, version: int, key: str, result: dict[str, Any]) -> Path:
        d = self.evals_dir(version)
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{key}.json"
        write_json_atomic(path, {**result, "version": version, "key": key, "saved": time.time()})
        return path

    def get_eval(self, version: int, key: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.evals_dir(version) / f"{key}.json").read_text())
        except FileNotFoundError:
            return None

    def evals(self, version: int) -> list[dict[str, Any]]:
        d = self.evals_dir(version)
        if not d.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]

    def record_episode(self, version: int, report: dict[str, Any]) -> None:
        """Append a controller's report of one real episode (steps, safety stops, success)."""
        path = self.episodes_path(version)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.locked():
            append_line(path, json.dumps({**report, "version": version, "unix": time.time()}))

    def episodes(self, version: int) -> list[dict[str, Any]]:
        pairs: list[dict[str, Any]] = []
        try:
            text = self.episodes_path(version).read_text()
        except FileNotFoundError:
            return []
        for raw in text.split("\n")[:-1]:
            with contextlib.suppress(ValueError):  # a torn line from a killed writer
                pairs.append(json.loads(raw))
        return pairs

    def summary(self) -> dict[str, Any]:
        """What `flywheel registry list --json` prints."""
        aliases = self.aliases()
        by_version: dict[int, list[str]] = {}
        for a, v in aliases.items():
            by_version.setdefault(v, []).append(a)
        rows = []
        for rec in self.versions():
            evals = self.evals(rec.version)
            rows.append(
                {
                    **rec.to_json(),
                    "aliases": sorted(by_version.get(rec.version, [])),
                    "evaluations": [
                        {
                            k: e.get(k)
                            for k in ("key", "task", "success_rate", "success_ci95", "episodes")
                        }
                        for e in evals
                    ],
                    "real_episodes": len(self.episodes(rec.version)),
                }
            )
        return {"root": str(self.root), "versions": rows, "aliases": aliases}


def _read_only(path: Path) -> None:
    """Clear write bits on every file of a version: immutability made visible to tools."""
    for p in path.rglob("*"):
        if p.is_file():
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
