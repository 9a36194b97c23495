"""A policy ready for the control loop: a verified bundle, a parity-checked runner, its identity.

`load_policy` takes a registry version or alias (or a bundle folder), loads the bundle (refusing
pickles and tampering), gets the export for the chosen backend (exporting it with a parity check
if it does not exist yet), and warms the runner up so the first real tick does not pay for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flywheel.deploy.export import ExportFormat, export_bundle, load_export
from flywheel.deploy.observations import Batch, load_batch, synthetic
from flywheel.deploy.runners import Backend, EagerRunner, PolicyRunner, input_keys
from flywheel.home import flywheel_home
from flywheel.policies import Bundle, load_bundle

if TYPE_CHECKING:  # the registry imports deploy (gates); deploy needs it only to type
    from flywheel.registry.store import Registry

CHUNK_LEN = 1
"""Actions per inference: these policies predict one action per observation."""


@dataclass
class DeployedPolicy:
    """One loaded version; immutable once built, shared by every session that runs it."""

    bundle: Bundle
    runner: PolicyRunner
    version: int | None
    """Registry version, None for a bundle loaded from a folder."""
    backend: str
    chunk_len: int = CHUNK_LEN
    low: np.ndarray = field(init=False)
    high: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        act = self.bundle.schema["action"]
        shape = tuple(act["shape"])
        self.low = np.broadcast_to(np.asarray(act["low"], np.float32), shape).copy()
        self.high = np.broadcast_to(np.asarray(act["high"], np.float32), shape).copy()

    @property
    def schema(self) -> dict[str, Any]:
        return self.bundle.schema

    @property
    def name(self) -> str:
        return f"v{self.version}" if self.version is not None else self.bundle.path.name

    @property
    def control_hz(self) -> float:
        return float(self.bundle.schema["control_hz"])

    def info(self) -> dict[str, Any]:
        """What a handshake announces about the model."""
        return {
            "model_version": self.name,
            "bundle_hash": self.bundle.content_hash,
            "schema_hash": self.bundle.schema["hash"],
            "normalizer_hash": self.bundle.normalizer.fingerprint(),
            "control_hz": self.control_hz,
            "chunk_len": self.chunk_len,
            "backend": self.backend,
        }


def recorded_observations(registry: Registry, version: int) -> Batch | None:
    """The newest observations recorded while evaluating `version`, if any."""
    d = registry.evals_dir(version)
    files = sorted(d.glob("*.obs.npz"), key=lambda p: p.stat().st_mtime) if d.is_dir() else []
    return load_batch(files[-1]) if files else None


def parity_observations(bundle: Bundle, observations: Batch | None) -> Batch:
    """Recorded observations when there are some, else draws around the normaliser's mean."""
    if observations is not None:
        return observations
    doc = json.loads((bundle.path / "normalizer.json").read_text())
    return synthetic(bundle.schema, doc)


def load_policy(
    ref: str | int | Path,
    *,
    registry: Registry | None = None,
    backend: Backend = "onnx",
    observations: Batch | None = None,
    warmup: int = 20,
) -> DeployedPolicy:
    """Load a registry version/alias (or, given a Path, a bundle folder) and its parity-checked
    runner."""
    version: int | None = None
    if registry is not None and not isinstance(ref, Path):
        version = registry.resolve(ref)  # type: ignore[arg-type]
        bundle = registry.load(version)
        export_root = registry.exports_dir(version)
        if observations is None:
            observations = recorded_observations(registry, version)
    else:
        bundle = load_bundle(Path(ref), with_value=False)
        export_root = flywheel_home() / "exports" / bundle.content_hash.removeprefix("sha256:")[:16]
    runner = runner_for(bundle, backend, export_root, observations)
    policy = DeployedPolicy(bundle=bundle, runner=runner, version=version, backend=backend)
    one = _first(parity_observations(bundle, observations), input_keys(bundle.actor))
    for _ in range(warmup):
        runner(one)
    return policy


def runner_for(
    bundle: Bundle, backend: Backend, export_root: Path, observations: Batch | None
) -> PolicyRunner:
    """The runner of a backend; an export is made (parity-checked) on first use."""
    if backend == "eager":
        return EagerRunner(bundle.actor)
    fmt: ExportFormat = backend  # type: ignore[assignment]
    out = export_root / fmt
    if not (out / "export.json").is_file():
        source = "recorded (evaluation rollouts)" if observations is not None else "synthetic"
        obs = parity_observations(bundle, observations)
        export_bundle(bundle, fmt, out, obs, source=source)
    return load_export(bundle, fmt, out)


def _first(batch: Batch, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {k: batch[k][0] for k in keys}
