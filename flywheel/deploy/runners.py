"""Policy runners: the deterministic action of a bundle's actor behind one small interface.

    runner(obs)        one observation {key: array} -> action (A,) float32
    runner.batch(obs)  {key: (N, ...)} -> (N, A)

Three backends: `eager` (the PyTorch actor, the reference), `torchscript` and `onnx` (exports,
see flywheel.deploy.export). The normaliser is part of the actor, so every backend takes raw
observations and normalises inside the graph; actions come out clamped to the schema's limits.

`DeterministicActor` is the export-friendly forward of `GaussianActor.mode`: positional tensors
in a fixed key order instead of a dict, and no torch.distributions object (whose argument
validation does not trace). Parity with `NumpyPolicy` is checked on every export.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Mapping
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from flywheel.policies import GaussianActor

Backend = Literal["eager", "torchscript", "onnx"]
BACKENDS: tuple[Backend, ...] = ("eager", "torchscript", "onnx")


class PolicyRunner(Protocol):
    backend: str
    keys: tuple[str, ...]

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray: ...

    def batch(self, obs: Mapping[str, np.ndarray]) -> np.ndarray: ...


def input_keys(actor: GaussianActor) -> tuple[str, ...]:
    """The order observations are passed to an exported graph: low-dim keys, then cameras."""
    return (*actor.spec.obs_shapes, *actor.spec.cameras)


class DeterministicActor(nn.Module):
    """`GaussianActor.mode` clamped to the action limits, as a function of positional tensors."""

    def __init__(self, actor: GaussianActor) -> None:
        super().__init__()
        self.actor = actor.eval()
        self.keys = input_keys(actor)
        self.action_dim = actor.spec.action_dim
        self.low, self.high = float(actor.spec.action_low), float(actor.spec.action_high)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        obs = {
            k: x.float() if x.dtype != torch.uint8 else x
            for k, x in zip(self.keys, xs, strict=True)
        }
        out = self.actor.net(self.actor.encoder(obs))  # (B, A) or (B, 2A) for squashed actors
        # mode: tanh of the mean for both parameterisations (see GaussianActor.dist/mode)
        mu = out[:, : self.action_dim]
        return torch.tanh(mu).clamp(self.low, self.high)


def example_inputs(actor: GaussianActor, batch: int = 2) -> tuple[torch.Tensor, ...]:
    spec = actor.spec
    xs = [torch.zeros((batch, *s)) for s in spec.obs_shapes.values()]
    xs += [torch.zeros((batch, *s), dtype=torch.uint8) for s in spec.cameras.values()]
    return tuple(xs)


def _as_inputs(
    keys: tuple[str, ...], obs: Mapping[str, np.ndarray], single: bool
) -> list[np.ndarray]:
    if single:
        return [np.asarray(obs[k])[None] for k in keys]
    return [np.asarray(obs[k]) for k in keys]


class _TorchModuleRunner:
    """Shared by the eager and TorchScript runners: `self.module(*tensors)` on numpy inputs."""

    module: Any
    keys: tuple[str, ...]

    @torch.inference_mode()
    def batch(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        xs = [torch.from_numpy(np.ascontiguousarray(x)) for x in _as_inputs(self.keys, obs, False)]
        return self.module(*xs).numpy()

    @torch.inference_mode()
    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        xs = [torch.from_numpy(np.ascontiguousarray(x)) for x in _as_inputs(self.keys, obs, True)]
        return self.module(*xs)[0].numpy()


class EagerRunner(_TorchModuleRunner):
    """The reference: the PyTorch actor itself."""

    backend = "eager"

    def __init__(self, actor: GaussianActor) -> None:
        self.module = DeterministicActor(actor)
        self.keys = self.module.keys


class TorchScriptRunner(_TorchModuleRunner):
    """A traced, frozen TorchScript module loaded from bytes whose sha256 was checked."""

    backend = "torchscript"

    def __init__(self, data: bytes, keys: tuple[str, ...], *, sha256: str | None = None) -> None:
        _check_sha(data, sha256, "TorchScript export")
        with warnings.catch_warnings():  # TorchScript is deprecated upstream; still supported
            warnings.simplefilter("ignore", DeprecationWarning)
            self.module = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
        self.keys = keys


class OnnxRunner:
    """An ONNX graph run by onnxruntime on one thread (no Python code in the file at all)."""

    backend = "onnx"

    def __init__(
        self, data: bytes, keys: tuple[str, ...], *, sha256: str | None = None, threads: int = 1
    ) -> None:
        import onnxruntime as ort

        _check_sha(data, sha256, "ONNX export")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        if tuple(names) != keys:
            raise ValueError(
                f"ONNX export inputs {names} differ from the policy's keys {list(keys)}"
            )
        self.keys = keys
        self._out = [self.session.get_outputs()[0].name]

    def batch(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        feed = dict(zip(self.keys, _as_inputs(self.keys, obs, False), strict=True))
        return self.session.run(self._out, feed)[0]

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        feed = {k: np.asarray(obs[k])[None] for k in self.keys}
        return self.session.run(self._out, feed)[0][0]


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _check_sha(data: bytes, want: str | None, what: str) -> None:
    if want is not None and sha256_bytes(data) != want:
        raise ValueError(f"{what}: content hash mismatch (tampered or corrupt); re-export it")


def one_thread() -> None:
    """Inference on one core: what the latency figures and the control loop assume."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
