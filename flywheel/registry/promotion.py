"""Promotion and rollback: the only ways `staging`, `production` and `previous` move.

A promotion evaluates every gate against the incumbent (`production`) it read, then moves the
aliases with a compare-and-swap: if another process moved them meanwhile, the gates run again
against the new incumbent (evaluations are cached, so a retry is cheap) instead of applying a
decision made against a policy that is no longer the one to beat. Every attempt is logged,
refusals included, with every gate's figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from flywheel.policies import BundleError
from flywheel.registry.gates import Gate, GateConfig, MakeEnv, run_gates
from flywheel.registry.store import ConflictError, Registry, RegistryError

log = logging.getLogger("flywheel.registry")

TARGETS = ("staging", "production")


@dataclass
class PromotionReport:
    """What `flywheel registry promote --json` prints."""

    version: int
    to: str
    incumbent: int | None
    decision: str
    """promoted, forced, refused or unchanged."""
    reason: str
    gates: list[Gate] = field(default_factory=list)
    forced: bool = False
    attempts: int = 1
    aliases: dict[str, int] = field(default_factory=dict)
    audit_seq: int | None = None

    @property
    def moved(self) -> bool:
        return self.decision in ("promoted", "forced")

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "to": self.to,
            "incumbent": self.incumbent,
            "decision": self.decision,
            "moved": self.moved,
            "reason": self.reason,
            "forced": self.forced,
            "gates": [g.to_json() for g in self.gates],
            "attempts": self.attempts,
            "aliases": self.aliases,
            "audit_seq": self.audit_seq,
        }


def promote(
    registry: Registry,
    ref: str | int,
    to: str,
    *,
    make_env: MakeEnv,
    config: GateConfig | None = None,
    force: bool = False,
    why: str | None = None,
    who: str | None = None,
    attempts: int = 3,
) -> PromotionReport:
    """Gate `ref` and move `to` to it if every gate passes (or `force`, with a reason)."""
    if to not in TARGETS:
        raise RegistryError(f"--to must be one of {TARGETS}, not {to!r}")
    if force and not why:
        raise RegistryError("--force needs --reason: an override of the gates must say why")
    config = config or GateConfig()
    version = registry.resolve(ref)
    gate_cfg = dict(config.__dict__)
    for attempt in range(1, attempts + 1):
        aliases = registry.aliases()
        incumbent = aliases.get("production")
        if aliases.get(to) == version:
            return PromotionReport(
                version, to, incumbent, "unchanged", f"v{version} is already {to}", aliases=aliases
            )
        gates = run_gates(registry, version, incumbent, to, make_env=make_env, config=config)
        failed = [g for g in gates if not g.passed]
        hard = [g for g in failed if not g.overridable]
        base = dict(
            version=version,
            target=to,
            incumbent=incumbent,
            gate_config=gate_cfg,
            gates=[g.to_json() for g in gates],
            attempt=attempt,
        )
        if failed and (not force or hard):
            reason = "; ".join(f"{g.name}: {g.reason}" for g in failed)
            if force:
                reason = f"--force cannot override {', '.join(g.name for g in hard)}: {reason}"
            entry = registry.log(
                op="promote_refused",
                why=why or reason,
                who=who,
                decision="refused",
                forced=force,
                **base,
            )
            return PromotionReport(
                version,
                to,
                incumbent,
                "refused",
                reason,
                gates,
                force,
                attempt,
                registry.aliases(),
                entry["seq"],
            )
        moves: dict[str, int | None] = {to: version}
        if to == "production" and incumbent is not None:
            moves["previous"] = incumbent
        decision = "forced" if failed else "promoted"
        reason = why or ("all gates passed" if not failed else "forced")
        if failed:
            log.warning(
                "FORCED promotion of v%s to %s over failed gates %s: %s",
                version,
                to,
                [g.name for g in failed],
                why,
            )
        try:
            entry = registry.move(
                moves,
                op="promote",
                why=reason,
                who=who,
                expect={"production": incumbent, to: aliases.get(to)},
                decision=decision,
                forced=bool(failed),
                **base,
            )
        except ConflictError as e:
            log.info("promotion of v%s: %s; re-running the gates (attempt %d)", version, e, attempt)
            continue
        return PromotionReport(
            version,
            to,
            incumbent,
            decision,
            reason,
            gates,
            bool(failed),
            attempt,
            registry.aliases(),
            entry["seq"],
        )
    entry = registry.log(
        op="promote_refused",
        why="aliases kept moving during the promotion",
        who=who,
        decision="refused",
        version=version,
        target=to,
    )
    return PromotionReport(
        version,
        to,
        registry.aliases().get("production"),
        "refused",
        f"the aliases moved during each of {attempts} attempts; try again",
        attempts=attempts,
        aliases=registry.aliases(),
        audit_seq=entry["seq"],
    )


def rollback(
    registry: Registry, *, why: str | None = None, who: str | None = None
) -> dict[str, Any]:
    """Point `production` back at `previous` (which must still load) and clear `previous`.

    `previous` is cleared, not swapped: a second rollback would re-deploy the version just
    rolled back from, which is rarely what an operator in a hurry means. Promote explicitly.
    """
    aliases = registry.aliases()
    prod, prev = aliases.get("production"), aliases.get("previous")
    if prev is None:
        raise RegistryError(
            f"{registry.root}: nothing to roll back to (no `previous`; production is "
            f"{'v' + str(prod) if prod is not None else 'unset'}). Promote a version instead."
        )
    try:
        registry.load(prev)
    except BundleError as e:
        raise RegistryError(f"refusing to roll back to v{prev}: {e}") from None
    entry = registry.move(
        {"production": prev, "previous": None},
        op="rollback",
        why=why or f"rollback from v{prod} to v{prev}",
        who=who,
        expect={"production": prod, "previous": prev},
        version=prev,
        rolled_back=prod,
    )
    return {
        "production": prev,
        "rolled_back": prod,
        "aliases": registry.aliases(),
        "audit_seq": entry["seq"],
    }
