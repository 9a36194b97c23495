"""Where and how the tensors of a training run compute: device, threads, compilation.

One small config that every training entry point takes, so "CPU with one thread" (the default:
two-core workstations and CI, where more threads only fight the env workers) and "CUDA when
present" are a setting, not code paths spread over the algorithms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """Device, CPU threads and whether to compile the update steps."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: CUDA when a GPU is visible, else CPU."""
    threads: int = 1
    """torch intra-op threads on CPU (1: small networks gain nothing from more on 2 cores)."""
    compile: bool = False
    """Compile each update into one graph (`algorithms/fused.py`): the IQL + improvement step
    took ~0.7x the eager time on this CPU (docs/benchmarks.md), at a one-time cost of 10-60 s
    per step function, so it is off by default and pays off for runs of tens of thousands of
    steps."""

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda") or self.threads < 1:
            raise ValueError("device is auto, cpu or cuda; threads >= 1")

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for, but torch sees no GPU")
        return torch.device(self.device)

    def apply(self) -> torch.device:
        """Set the thread count; returns the device to put networks and batches on."""
        torch.set_num_threads(self.threads)
        return self.torch_device

    def describe(self) -> dict[str, Any]:
        """What a run records in its lineage (results depend on device and threads)."""
        dev = self.torch_device
        return {
            "device": str(dev),
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
            "threads": self.threads,
            "compile": self.compile,
        }
