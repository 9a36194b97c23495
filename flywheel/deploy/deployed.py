"""A policy ready for the control loop: a verified bundle, a parity-checked runner, its identity.

`load_policy` takes a registry version or alias (or a bundle folder), loads the bundle (refusing
pickles and tampering), gets the export for the chosen backend (exporting it with a parity check
if it does not exist yet), and warms the runner up so the first real tick does not pay for it.
All of that runs Python and PyTorch in the calling process; to load a version beside a running
control loop without taking its GIL, use `flywheel.deploy.prepare.Preparer`, which does the same
checks in a helper process and leaves only opening the checked export to this one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flywheel.deploy.export import ExportFormat, checked_export, export_bundle
from flywheel.deploy.observations import Batch, ObservationSpec, load_batch, synthetic
from flywheel.deploy.runners import Backend, EagerRunner, PolicyRunner, input_keys
from flywheel.home import flywheel_home
from flywheel.policies import Bundle, BundleError, load_bundle, verify_files

if TYPE_CHECKING:  # the registry imports deploy (gates); deploy needs it only to type
    from flywheel.registry.store import Registry

CHUNK_LEN = 1
"""Actions per inference: these policies predict one action per observation."""


@dataclass(frozen=True)
class BundleCard:
    """What serving a bundle needs besides its runner: identity, schema, input order, manifest.

    Read from a verified `Bundle`; small and picklable, so a helper process can hand it over
    without the serving process ever building the bundle's networks.
    """

    path: Path
    content_hash: str
    schema: dict[str, Any]
    normalizer_hash: str
    keys: tuple[str, ...]
    """Observation keys in the order exported graphs take them."""
    manifest: dict[str, Any]

    @classmethod
    def of(cls, bundle: Bundle) -> BundleCard:
        return cls(
            path=bundle.path.resolve(),
            content_hash=bundle.content_hash,
            schema=bundle.schema,
            normalizer_hash=bundle.normalizer.fingerprint(),
            keys=input_keys(bundle.actor),
            manifest=bundle.manifest,
        )

    def check_unchanged(self) -> None:
        """Raise BundleError unless the folder still holds exactly the verified files.

        Re-hashes every file against the manifest (`verify_files`: file reads and hashing release
        the GIL) and requires that manifest to be the one verified when the card was made; no
        network is built.
        """
        if verify_files(self.path) != self.manifest:
            raise BundleError(f"{self.path}/manifest.json: changed since the bundle was verified")


@dataclass
class DeployedPolicy:
    """One loaded version; immutable once built, shared by every session that runs it."""

    bundle: Bundle | None
    """The loaded bundle with its networks; None for a version prepared in a helper process
    (`flywheel.deploy.prepare`), whose networks are never built in the serving process."""
    runner: PolicyRunner
    version: int | None
    """Registry version, None for a bundle loaded from a folder."""
    backend: str
    card: BundleCard = None  # type: ignore[assignment]  # made from `bundle` when not given
    chunk_len: int = CHUNK_LEN
    low: np.ndarray = field(init=False)
    high: np.ndarray = field(init=False)
    obs_spec: ObservationSpec = field(init=False)
    """Built here, off the control path, so adopting this policy at a tick is a pointer switch."""

    def __post_init__(self) -> None:
        if self.card is None:
            if self.bundle is None:
                raise ValueError("DeployedPolicy needs a bundle or a card")
            self.card = BundleCard.of(self.bundle)
        act = self.schema["action"]
        shape = tuple(act["shape"])
        self.low = np.broadcast_to(np.asarray(act["low"], np.float32), shape).copy()
        self.high = np.broadcast_to(np.asarray(act["high"], np.float32), shape).copy()
        self.obs_spec = ObservationSpec(self.schema)

    @property
    def schema(self) -> dict[str, Any]:
        return self.card.schema

    @property
    def name(self) -> str:
        return f"v{self.version}" if self.version is not None else self.card.path.name

    @property
    def control_hz(self) -> float:
        return float(self.schema["control_hz"])

    def info(self) -> dict[str, Any]:
        """What a handshake announces about the model."""
        return {
            "model_version": self.name,
            "bundle_hash": self.card.content_hash,
            "schema_hash": self.schema["hash"],
            "normalizer_hash": self.card.normalizer_hash,
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


def resolve_bundle(
    ref: str | int | Path,
    registry: Registry | None,
    observations: Batch | None,
    home: Path | None = None,
) -> tuple[int | None, Bundle, Path, Batch | None]:
    """(version, verified bundle, export folder, parity observations) for a version, alias or
    bundle folder; exports of folder bundles live under `home` (default $FLYWHEEL_HOME)."""
    if registry is not None and not isinstance(ref, Path):
        version = registry.resolve(ref)  # type: ignore[arg-type]
        bundle = registry.load(version)
        if observations is None:
            observations = recorded_observations(registry, version)
        return version, bundle, registry.exports_dir(version), observations
    bundle = load_bundle(Path(ref), with_value=False)
    digest = bundle.content_hash.removeprefix("sha256:")[:16]
    return None, bundle, (home or flywheel_home()) / "exports" / digest, observations


def load_policy(
    ref: str | int | Path,
    *,
    registry: Registry | None = None,
    backend: Backend = "onnx",
    observations: Batch | None = None,
    warmup: int = 20,
) -> DeployedPolicy:
    """Load a registry version/alias (or, given a Path, a bundle folder) and its parity-checked
    runner, all in this process."""
    version, bundle, export_root, observations = resolve_bundle(ref, registry, observations)
    runner = runner_for(bundle, backend, export_root, observations)
    policy = DeployedPolicy(bundle=bundle, runner=runner, version=version, backend=backend)
    one = first_observation(parity_observations(bundle, observations), policy.card.keys)
    for _ in range(warmup):
        runner(one)
    return policy


def runner_for(
    bundle: Bundle, backend: Backend, export_root: Path, observations: Batch | None
) -> PolicyRunner:
    """The runner of a backend; an export is made (parity-checked) on first use."""
    if backend == "eager":
        return EagerRunner(bundle.actor)
    return export_for(bundle, backend, export_root, observations)[0]


def export_for(
    bundle: Bundle, fmt: ExportFormat, export_root: Path, observations: Batch | None
) -> tuple[PolicyRunner, dict[str, Any]]:
    """The export's runner and its export.json, after its hash, origin and parity checks; the
    export is made first if there is none."""
    out = export_root / fmt
    if not (out / "export.json").is_file():
        source = "recorded (evaluation rollouts)" if observations is not None else "synthetic"
        obs = parity_observations(bundle, observations)
        export_bundle(bundle, fmt, out, obs, source=source)
    return checked_export(bundle, fmt, out)


def first_observation(batch: Batch, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {k: batch[k][0] for k in keys}
