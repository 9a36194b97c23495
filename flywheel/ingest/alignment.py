"""Time alignment: resample streams recorded at their own rates onto one control grid.

Real sensors run at different rates, jitter and drop samples. A policy acts on a fixed control
grid, so every stream is resampled onto it with the rule a controller itself follows: at each
tick, use the last sample at or before the tick (never a sample from the future, which would leak
information the controller could not have had). A per-stream latency offset moves a stream's
stamps back to when the sample was taken (a camera frame stamped on arrival was captured
`latency_s` earlier).

Each tick records how old the sample it used is (staleness). A tick is stale when that age is
beyond one period, the longer of the stream's own period and the control period (a 10 Hz camera
under a 30 Hz controller is not stale at 60 ms). An episode is flagged when more than 2 % of a
stream's ticks are stale and refused above 5 %, or when any stream's timestamps go backwards.
The source time of the sample used at each tick is kept with the episode, so nothing about the
original timing is lost for the samples whose data is kept.

Glossary: N samples in a stream, T+1 ticks on the grid (T control steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flywheel.ingest.errors import IngestError


@dataclass(frozen=True, kw_only=True)
class AlignmentConfig:
    """How streams are put on the control grid and when an episode is flagged or refused."""

    flag_stale_fraction: float = 0.02
    """Flag an episode (kept, marked in its info) when a stream has more stale ticks than this."""
    reject_stale_fraction: float = 0.05
    """Refuse an episode (quarantine) when a stream has more stale ticks than this."""
    stale_after_periods: float = 1.0
    """A tick is stale when its sample is older than this many periods."""
    tolerance_s: float = 1e-3
    """A sample up to this much after a tick still counts as at the tick: float32 stamps and
    container time bases round, and a frame stamped 0.0333334 belongs to the tick at 1/30 s."""
    latency_s: dict[str, float] = field(default_factory=dict)
    """Per-stream latency offsets by corpus key (`images/front`), seconds subtracted from the
    stream's stamps before alignment; adds to the offset a mapping file gives."""

    def __post_init__(self) -> None:
        if not 0 <= self.flag_stale_fraction <= self.reject_stale_fraction <= 1:
            raise ValueError(
                "need 0 <= flag_stale_fraction <= reject_stale_fraction <= 1, got "
                f"{self.flag_stale_fraction} and {self.reject_stale_fraction}"
            )
        if self.stale_after_periods <= 0 or self.tolerance_s < 0:
            raise ValueError("stale_after_periods must be > 0 and tolerance_s >= 0")


@dataclass(kw_only=True)
class Stream:
    """One recorded stream in its source clock, before alignment."""

    key: str
    """Corpus path it becomes: `obs/joint_pos`, `images/front`, `action`, `reward`."""
    field: str
    """Its name in the source (column, dataset path, topic), used in error messages."""
    file: str
    """The file it was read from."""
    times: np.ndarray
    """(N,) float64 seconds in the source clock, in recording order."""
    values: Any
    """(N, ...) array, or a `FrameSource` for camera streams (decoded only where used)."""
    latency_s: float = 0.0
    """Seconds the stamps lag the moment the sample describes."""
    rate_hz: float | None = None
    """Nominal rate; estimated from the stamps (median interval) when None."""
    on_grid: bool = False
    """True when the stream defines the grid (a table row per tick): nothing to resample."""


@dataclass(frozen=True, kw_only=True)
class StreamAlignment:
    """Where each tick's sample came from, and how fresh it was."""

    key: str
    field: str
    file: str
    index: np.ndarray
    """(T+1,) int64 sample used at each tick."""
    source_time: np.ndarray
    """(T+1,) float64 raw source stamp of that sample (before the latency offset)."""
    staleness: np.ndarray
    """(T+1,) float64 tick time minus the sample's time; negative only before a stream's first
    sample, where the first sample is used and the tick counts as stale."""
    period_s: float
    samples: int
    stale_ticks: int
    drops: int
    """Samples estimated missing from the stream: gaps longer than 1.5 periods."""
    latency_s: float
    on_grid: bool

    def summary(self) -> dict[str, Any]:
        """JSON for the episode's info: enough to audit the timing without the arrays."""
        ticks = len(self.index)
        return {
            "field": self.field,
            "file": self.file,
            "samples": self.samples,
            "period_s": round(self.period_s, 6),
            "latency_s": self.latency_s,
            "stale_ticks": self.stale_ticks,
            "stale_fraction": round(self.stale_ticks / ticks, 6) if ticks else 0.0,
            "max_staleness_s": round(float(np.max(self.staleness)), 6) if ticks else 0.0,
            "drops": self.drops,
            "first_time": float(self.source_time[0]) if ticks else None,
        }


@dataclass(frozen=True, kw_only=True)
class Alignment:
    """All streams of one episode on one grid."""

    grid: np.ndarray
    """(T+1,) float64 tick times in the source clock."""
    streams: dict[str, StreamAlignment]
    flags: list[str]
    """Why the episode is flagged (empty when it is not)."""

    def report(self) -> dict[str, Any]:
        """JSON for the episode's info."""
        return {
            "grid_start": float(self.grid[0]),
            "ticks": len(self.grid),
            "flagged": bool(self.flags),
            "flags": self.flags,
            "streams": {k: s.summary() for k, s in self.streams.items()},
        }


def check_monotonic(times: np.ndarray, *, file: str, field: str) -> np.ndarray:
    """Stamps as float64; refuse times that go backwards (reordered or reset clocks)."""
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1:
        raise IngestError(file, field, f"timestamps must be 1-D, got shape {t.shape}")
    if not np.isfinite(t).all():
        i = int(np.argmax(~np.isfinite(t)))
        raise IngestError(file, field, f"timestamp {i} is NaN or inf")
    back = np.flatnonzero(np.diff(t) < 0)
    if len(back):
        i = int(back[0]) + 1
        raise IngestError(
            file,
            field,
            f"timestamps go backwards at sample {i} ({t[i]:.6f} s after {t[i - 1]:.6f} s; "
            f"{len(back)} place(s) in all)",
        )
    return t


def nominal_period(times: np.ndarray) -> float | None:
    """Median positive interval: robust to a few drops and bursts; None below two samples."""
    d = np.diff(times)
    d = d[d > 0]
    return float(np.median(d)) if len(d) else None


def control_grid(start: float, end: float, control_hz: float) -> np.ndarray:
    """Ticks start, start + 1/hz, ... up to end (inclusive within a microsecond): (T+1,)."""
    if end < start:
        return np.zeros(0)
    n = int(np.floor((end - start) * control_hz + 1e-6)) + 1
    return start + np.arange(n, dtype=np.float64) / control_hz


def align(
    streams: list[Stream], grid: np.ndarray, config: AlignmentConfig, *, control_hz: float
) -> Alignment:
    """Resample every stream onto `grid`; raise IngestError when an episode must be refused."""
    grid = np.asarray(grid, dtype=np.float64)
    control_period = 1.0 / control_hz
    out: dict[str, StreamAlignment] = {}
    flags: list[str] = []
    for s in streams:
        raw = check_monotonic(s.times, file=s.file, field=s.field)
        if len(raw) == 0:
            raise IngestError(s.file, s.field, "no samples in this episode")
        latency = s.latency_s + config.latency_s.get(s.key, 0.0)
        t = raw - latency
        if s.on_grid:
            if len(t) != len(grid):
                raise IngestError(
                    s.file, s.field, f"{len(t)} rows, but the episode has {len(grid)} ticks"
                )
            idx = np.arange(len(t))
        else:
            # the last sample at or before each tick (within the tolerance)
            idx = np.searchsorted(t, grid + config.tolerance_s, side="right") - 1
            idx = np.clip(idx, 0, len(t) - 1)  # before the first sample: use it, count stale
        staleness = grid - t[idx]
        own = 1.0 / s.rate_hz if s.rate_hz else (nominal_period(t) or control_period)
        period = max(own, control_period)
        limit = config.stale_after_periods * period + config.tolerance_s
        stale = (staleness > limit) | (staleness < -config.tolerance_s)
        gaps = np.diff(t)
        big = gaps[gaps > 1.5 * own]
        drops = int(np.sum(np.maximum(np.round(big / own) - 1, 0))) if len(big) else 0
        a = StreamAlignment(
            key=s.key,
            field=s.field,
            file=s.file,
            index=idx.astype(np.int64),
            source_time=raw[idx],
            staleness=staleness,
            period_s=period,
            samples=len(t),
            stale_ticks=int(stale.sum()),
            drops=drops,
            latency_s=latency,
            on_grid=s.on_grid,
        )
        out[s.key] = a
        frac = a.stale_ticks / len(grid) if len(grid) else 0.0
        what = (
            f"{a.stale_ticks} of {len(grid)} ticks ({frac:.1%}) use a sample older than "
            f"{config.stale_after_periods:g} period ({period * 1e3:.1f} ms); max staleness "
            f"{float(np.max(np.abs(staleness))) * 1e3:.1f} ms, {drops} dropped sample(s)"
        )
        if frac > config.reject_stale_fraction:
            raise IngestError(
                s.file,
                s.field,
                f"too stale: {what} (limit {config.reject_stale_fraction:.0%})",
            )
        if frac > config.flag_stale_fraction:
            flags.append(f"{s.field}: {what}")
    return Alignment(grid=grid, streams=out, flags=flags)
