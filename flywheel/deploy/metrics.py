"""Controller server metrics: counters and latency windows, as JSON and Prometheus text.

Latencies are kept as the last N samples (not a histogram) so p50/p99 are exact over a recent
window, which is what an operator watching a deployment wants to know.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

import numpy as np

WINDOW = 10_000
"""Latency samples kept per series."""


class Metrics:
    """Thread-safe counters (name + labels) and latency windows (milliseconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self.gauges: dict[str, float] = {}
        self.latency: dict[str, deque[float]] = {}

    def inc(self, name: str, n: int = 1, **labels: str) -> None:
        with self._lock:
            self.counters[(name, tuple(sorted(labels.items())))] += n

    def set(self, name: str, value: float) -> None:
        with self._lock:
            self.gauges[name] = value

    def observe(self, name: str, ms: float) -> None:
        with self._lock:
            self.latency.setdefault(name, deque(maxlen=WINDOW)).append(ms)

    def count(self, name: str, **labels: str) -> int:
        with self._lock:
            return self.counters[(name, tuple(sorted(labels.items())))]

    def quantiles(self, name: str) -> dict[str, float]:
        with self._lock:
            xs = np.asarray(self.latency.get(name, ()), float)
        if not len(xs):
            return {"n": 0}
        p50, p99 = np.percentile(xs, [50, 99])
        return {"n": len(xs), "p50_ms": float(p50), "p99_ms": float(p99), "max_ms": float(xs.max())}

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            counters = [
                {"name": n, "labels": dict(lab), "value": v}
                for (n, lab), v in sorted(self.counters.items())
            ]
            gauges = dict(self.gauges)
            names = list(self.latency)
        return {
            "counters": counters,
            "gauges": gauges,
            "latency": {n: self.quantiles(n) for n in names},
        }

    def prometheus(self) -> str:
        """The Prometheus text exposition format (names prefixed `flywheel_controller_`)."""
        doc = self.to_json()
        lines = []
        for c in doc["counters"]:
            lab = ",".join(f'{k}="{v}"' for k, v in sorted(c["labels"].items()))
            lines.append(f"flywheel_controller_{c['name']}_total{{{lab}}} {c['value']}")
        for name, v in sorted(doc["gauges"].items()):
            lines.append(f"flywheel_controller_{name} {v}")
        for name, q in sorted(doc["latency"].items()):
            if q["n"]:
                for key, quant in (("p50_ms", "0.5"), ("p99_ms", "0.99")):
                    lines.append(
                        f'flywheel_controller_{name}_ms{{quantile="{quant}"}} {q[key]:.4f}'
                    )
                lines.append(f"flywheel_controller_{name}_ms_count {q['n']}")
        return "\n".join(lines) + "\n"
