"""The policy registry: immutable versions, aliases moved atomically, an audit log, gates."""

from flywheel.registry.audit import ALIASES
from flywheel.registry.gates import Gate, GateConfig, TargetSpec, run_gates
from flywheel.registry.promotion import PromotionReport, promote, rollback
from flywheel.registry.store import ConflictError, Registry, RegistryError, VersionRecord

__all__ = [
    "ALIASES",
    "ConflictError",
    "Gate",
    "GateConfig",
    "PromotionReport",
    "Registry",
    "RegistryError",
    "TargetSpec",
    "VersionRecord",
    "promote",
    "rollback",
    "run_gates",
]
