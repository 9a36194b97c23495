"""Policy bundles: a folder that is everything needed to run a policy, and nothing executable.

    bundle/
      manifest.json         format, sha256 of every other file (tampering is refused)
      config.json           PolicySpec (networks, observation keys, cameras, action limits)
      weights.safetensors   actor (with its frozen normaliser)
      value.safetensors     optional V(s) for online fine-tuning to start from
      normalizer.json       the normaliser's mean/std per key, readable, with its hash
      schema.json           observation/action schema a controller validates against
      lineage.json          corpus snapshot, parent bundle, algorithm, config, seed, versions, metrics

Loading never unpickles: weights are safetensors, everything else is JSON; a folder holding a
pickle-based checkpoint is refused with a message that says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from flywheel.policies.networks import GaussianActor, PolicySpec, ValueNet
from flywheel.policies.normalizer import Normalizer
from flywheel.provenance import code_version

FORMAT = "flywheel-bundle/1"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")


class BundleError(Exception):
    """A bundle that must not be loaded: missing, tampered, pickled or malformed."""


@dataclass
class Bundle:
    """A loaded policy: the actor (eval mode), an optional value net, and its documents."""

    path: Path
    spec: PolicySpec
    actor: GaussianActor
    value: ValueNet | None
    schema: dict[str, Any]
    lineage: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def normalizer(self) -> Normalizer:
        return self.actor.encoder.normalizer

    @property
    def content_hash(self) -> str:
        """One hash naming the bundle's exact content (the manifest's hash)."""
        return self.manifest["bundle_hash"]


def schema_of(spec: PolicySpec, *, task: str, control_hz: float) -> dict[str, Any]:
    """The observation/action contract a controller checks every observation against."""
    obs = {k: {"shape": list(s), "dtype": "float32"} for k, s in spec.obs_shapes.items()}
    obs |= {c: {"shape": list(s), "dtype": "uint8"} for c, s in spec.cameras.items()}
    schema = {
        "task": task,
        "control_hz": control_hz,
        "observation": obs,
        "action": {
            "shape": [spec.action_dim],
            "dtype": "float32",
            "low": spec.action_low,
            "high": spec.action_high,
        },
    }
    schema["hash"] = _hash_json(schema)
    return schema


def _hash_json(d: Any) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file in 4 MiB reads; reads and hashing (of more than 2 KiB) release the GIL,
    so a serving process can re-check a bundle beside its control loop."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def environment() -> dict[str, Any]:
    """Versions and threads: what a result depends on beyond the seed."""
    return {
        **code_version(),  # package version, git commit and dirty flag
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }


def save_bundle(
    path: str | Path,
    actor: GaussianActor,
    *,
    task: str,
    control_hz: float,
    lineage: dict[str, Any],
    value: ValueNet | None = None,
) -> Path:
    """Write a bundle atomically (to a temp folder, then one rename); returns its path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    spec = actor.spec
    # copies: a trained network's weights are views into its optimiser's flat buffer, and
    # safetensors refuses tensors that share memory
    cpu = lambda m: {k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()}  # noqa: E731
    save_file(cpu(actor), tmp / "weights.safetensors")
    if value is not None:
        save_file(cpu(value), tmp / "value.safetensors")
    norm = actor.encoder.normalizer
    norm_doc = {
        k: {
            "mean": getattr(norm, f"mean_{k}").tolist(),
            "std": getattr(norm, f"std_{k}").tolist(),
        }
        for k in norm.keys
    }
    docs = {
        "config.json": {
            "spec": spec.to_json(),
            "has_value": value is not None,
            "value_layer_norm": bool(value is not None and value.layer_norm),
        },
        "normalizer.json": {"keys": norm_doc, "hash": norm.fingerprint()},
        "schema.json": schema_of(spec, task=task, control_hz=control_hz),
        "lineage.json": {**lineage, "environment": environment(), "created": time.time()},
    }
    for name, doc in docs.items():
        (tmp / name).write_text(json.dumps(doc, indent=1, default=str))
    files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir())}
    manifest = {"format": FORMAT, "files": files, "bundle_hash": _hash_json(files)}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if path.exists():
        raise BundleError(f"{path} already exists; bundles are immutable")
    path.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tmp, path)
    return path


def load_bundle(path: str | Path, *, with_value: bool = True) -> Bundle:
    """Load and check a bundle; never unpickles. Raises BundleError saying what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle folder")
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise BundleError(
            f"{path}: refusing pickle-based checkpoint file(s) {pickled}; loading them could run "
            "arbitrary code. Export weights as safetensors with `save_bundle`."
        )
    manifest = verify_files(path)
    config = json.loads((path / "config.json").read_text())
    spec = PolicySpec.from_json(config["spec"])
    norm = Normalizer(spec.obs_shapes)
    actor = GaussianActor(spec, norm)
    _load_weights(actor, path / "weights.safetensors")
    value = None
    if with_value and config.get("has_value"):
        value = ValueNet(spec, Normalizer(spec.obs_shapes), layer_norm=config["value_layer_norm"])
        _load_weights(value, path / "value.safetensors")
    return Bundle(
        path=path,
        spec=spec,
        actor=actor.eval(),
        value=None if value is None else value.eval(),
        schema=json.loads((path / "schema.json").read_text()),
        lineage=json.loads((path / "lineage.json").read_text()),
        manifest=manifest,
    )


def verify_files(path: Path) -> dict[str, Any]:
    """The bundle's manifest, once the folder holds exactly the files it lists and each has its
    recorded hash. Raises BundleError naming the file and what is wrong."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}/manifest.json: unreadable ({e})") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    present = {p.name for p in path.iterdir()} - {"manifest.json"}
    if present != set(manifest["files"]):
        raise BundleError(
            f"{path}: files {sorted(present)} differ from the manifest {sorted(manifest['files'])}"
        )
    for name, want in manifest["files"].items():
        if file_sha256(path / name) != want:
            raise BundleError(f"{path}/{name}: content hash mismatch (tampered or corrupt)")
    return manifest


def _load_weights(module: torch.nn.Module, file: Path) -> None:
    try:
        state = load_file(file)
    except (SafetensorError, OSError) as e:
        raise BundleError(f"{file}: not a readable safetensors file ({e})") from None
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BundleError(
            f"{file}: weights do not fit the config (missing {missing[:3]}, extra {unexpected[:3]})"
        )
