"""Export a bundle's actor to TorchScript or ONNX, and refuse any export that is not at parity.

    <export dir>/
      policy.onnx | policy.ts   the graph (normaliser inside, actions clamped to the limits)
      observations.npz          the recorded observations parity was checked on
      export.json               format, file sha256, bundle hash, parity report, versions

An export is used only after a parity check: its actions on recorded observations must match
the eager PyTorch actor's within 1e-5 (max abs difference), checked when it is written and
again every time it is loaded, together with the file's sha256 and the bundle hash it came from.
ONNX files hold no code; a TorchScript archive holds TorchScript code, so it is only ever
loaded from an export folder this module wrote (hash-checked).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from flywheel.deploy.observations import Batch, batch_len, load_batch, save_batch
from flywheel.deploy.runners import (
    DeterministicActor,
    EagerRunner,
    OnnxRunner,
    PolicyRunner,
    TorchScriptRunner,
    example_inputs,
    input_keys,
    sha256_bytes,
)
from flywheel.policies import Bundle

ExportFormat = Literal["onnx", "torchscript"]
FORMATS: tuple[ExportFormat, ...] = ("onnx", "torchscript")
FILENAMES = {"onnx": "policy.onnx", "torchscript": "policy.ts"}
PARITY_TOL = 1e-5
"""Largest allowed |action_export - action_eager| on any recorded observation and dimension."""
ONNX_OPSET = 17


class ExportError(Exception):
    """An export that must not be used: not at parity, tampered, or made from another bundle."""


@dataclass(frozen=True)
class Parity:
    """Outcome of comparing an export with the eager actor."""

    max_abs_diff: float
    observations: int
    tolerance: float
    passed: bool


def check_parity(
    reference: PolicyRunner, candidate: PolicyRunner, obs: Batch, tol: float = PARITY_TOL
) -> Parity:
    """Max abs action difference over the batch and over single-observation calls."""
    n = batch_len(obs)
    ref = reference.batch(obs)
    got = candidate.batch(obs)
    diff = float(np.max(np.abs(ref.astype(np.float64) - got))) if n else 0.0
    for i in np.linspace(0, n - 1, min(n, 16)).astype(int):  # the controller's path: batch of 1
        one = {k: v[i] for k, v in obs.items()}
        diff = max(diff, float(np.max(np.abs(reference(one).astype(np.float64) - candidate(one)))))
    if not np.isfinite(diff):
        diff = float("inf")
    return Parity(max_abs_diff=diff, observations=n, tolerance=tol, passed=diff <= tol)


def graph_bytes(bundle: Bundle, fmt: ExportFormat) -> bytes:
    """Trace the deterministic actor to TorchScript or ONNX, in memory."""
    module = DeterministicActor(bundle.actor).eval()
    example = example_inputs(bundle.actor)
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and legacy-exporter deprecation chatter
        if fmt == "torchscript":
            traced = torch.jit.trace(module, example, check_trace=False)
            torch.jit.save(torch.jit.freeze(traced), buf)
        elif fmt == "onnx":
            keys = list(input_keys(bundle.actor))
            torch.onnx.export(
                module,
                example,
                buf,
                dynamo=False,  # the TorchScript-based exporter: no onnxscript dependency
                input_names=keys,
                output_names=["action"],
                dynamic_axes={k: {0: "batch"} for k in [*keys, "action"]},
                opset_version=ONNX_OPSET,
            )
        else:
            raise ExportError(f"unknown export format {fmt!r}; formats: {FORMATS}")
    return buf.getvalue()


def runner_from_bytes(
    fmt: ExportFormat, data: bytes, keys: tuple[str, ...], sha256: str | None = None
) -> PolicyRunner:
    try:
        if fmt == "onnx":
            return OnnxRunner(data, keys, sha256=sha256)
        return TorchScriptRunner(data, keys, sha256=sha256)
    except ValueError as e:
        raise ExportError(str(e)) from None


def export_bundle(
    bundle: Bundle,
    fmt: ExportFormat,
    out_dir: str | Path,
    observations: Batch,
    *,
    source: str = "given",
    tol: float = PARITY_TOL,
) -> dict[str, Any]:
    """Export, check parity, and only then publish the folder (one rename); returns export.json.

    Raises ExportError (and writes nothing) when parity fails. If another process published
    the same export first, theirs is kept.
    """
    out_dir = Path(out_dir)
    keys = input_keys(bundle.actor)
    obs = {k: np.asarray(observations[k]) for k in keys}
    data = graph_bytes(bundle, fmt)
    parity = check_parity(EagerRunner(bundle.actor), runner_from_bytes(fmt, data, keys), obs, tol)
    if not parity.passed:
        raise ExportError(
            f"{fmt} export of {bundle.path}: max abs action difference {parity.max_abs_diff:.3g} "
            f"on {parity.observations} recorded observations exceeds {tol:g}; not exported"
        )
    doc = {
        "format": fmt,
        "file": FILENAMES[fmt],
        "sha256": sha256_bytes(data),
        "bundle_hash": bundle.content_hash,
        "schema_hash": bundle.schema["hash"],
        "inputs": list(keys),
        "parity": asdict(parity),
        "observations": source,
        "created": time.time(),
        "versions": _versions(),
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    (tmp / FILENAMES[fmt]).write_bytes(data)
    save_batch(tmp / "observations.npz", obs)
    (tmp / "export.json").write_text(json.dumps(doc, indent=1))
    try:
        os.rename(tmp, out_dir)
    except OSError:  # published meanwhile (or a stale one is there): load_export decides
        shutil.rmtree(tmp, ignore_errors=True)
    return doc


def load_export(bundle: Bundle, fmt: ExportFormat, out_dir: str | Path) -> PolicyRunner:
    """A runner for a published export, after checking its hash, its origin and its parity."""
    return checked_export(bundle, fmt, out_dir)[0]


def checked_export(
    bundle: Bundle, fmt: ExportFormat, out_dir: str | Path
) -> tuple[PolicyRunner, dict[str, Any]]:
    """`load_export`, also returning export.json: its `sha256` is that of the very bytes the
    runner was built from and parity-checked, so another process can open them by that hash."""
    out_dir = Path(out_dir)
    try:
        doc = json.loads((out_dir / "export.json").read_text())
    except FileNotFoundError:
        raise ExportError(f"{out_dir}: no {fmt} export here; run `flywheel export`") from None
    except ValueError as e:
        raise ExportError(f"{out_dir}/export.json: unreadable ({e})") from None
    if doc.get("format") != fmt:
        raise ExportError(f"{out_dir}/export.json: format {doc.get('format')!r}, wanted {fmt!r}")
    if doc.get("bundle_hash") != bundle.content_hash:
        raise ExportError(
            f"{out_dir}: exported from bundle {doc.get('bundle_hash')}, not {bundle.content_hash}"
        )
    keys = input_keys(bundle.actor)
    data = (out_dir / doc["file"]).read_bytes()
    runner = runner_from_bytes(fmt, data, keys, sha256=doc["sha256"])
    obs = load_batch(out_dir / "observations.npz")
    parity = check_parity(EagerRunner(bundle.actor), runner, obs)
    if not parity.passed or parity.observations == 0:
        raise ExportError(
            f"{out_dir}/{doc['file']}: parity check failed on load (max abs diff "
            f"{parity.max_abs_diff:.3g} on {parity.observations} observations, limit {PARITY_TOL:g})"
        )
    return runner, doc | {"parity_on_load": asdict(parity)}


def _versions() -> dict[str, str]:
    out = {"torch": torch.__version__}
    try:
        import onnx
        import onnxruntime

        out |= {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    except ImportError:
        pass
    return out
