"""The corpus schema: its semver, the feature spec, and the rules for names.

The feature spec is the contract between writers and readers: every array an episode holds is
declared once (dtype, per-step shape, kind, units, codec), so a reader can build a training cache
or a policy's observation schema without opening a single episode.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from flywheel.corpus.errors import BadEpisodeError, SchemaVersionError

SCHEMA_VERSION = "1.0.0"
"""Semver of the on-disk layout. Bump the major for changes an older reader would misread."""

Kind = Literal["lowdim", "image", "action", "reward", "flag", "time", "extra"]
KINDS: tuple[str, ...] = ("lowdim", "image", "action", "reward", "flag", "time", "extra")

IMAGE_CODECS: tuple[str, ...] = ("jpeg", "png", "raw")
"""`jpeg` (lossy, default, OpenCV quality 90); `png` and `raw` (zstd) are lossless."""

ARRAY_CODECS: tuple[str, ...] = ("zstd", "none")

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$")


def check_name(name: object, *, episode: str, key: str) -> str:
    """A key or camera name becomes a path in the store: allow only plain identifiers.

    This is what stops `../x`, absolute paths, dots and separators from escaping the store.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadEpisodeError(
            episode, key, f"name {name!r} is not allowed: use letters, digits and '_' (max 64)"
        )
    return name


def check_label(value: object, *, episode: str, key: str) -> str:
    """Metadata labels (task, robot, versions) are shown in tables and filters: keep them plain."""
    if not isinstance(value, str) or not _LABEL.match(value) or ".." in value:
        raise BadEpisodeError(
            episode,
            key,
            f"value {value!r} is not allowed: use letters, digits and _ . : @ + - (max 128)",
        )
    return value


def parse_version(version: str) -> tuple[int, int, int]:
    """'1.2.3' -> (1, 2, 3); a malformed version is a schema error, not a crash."""
    parts = str(version).split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise SchemaVersionError(f"schema version {version!r} is not semver (MAJOR.MINOR.PATCH)")
    major, minor, patch = (int(p) for p in parts)
    return major, minor, patch


def check_version(version: str, *, where: str) -> None:
    """Refuse a layout of another major version: reading it would silently misread data."""
    major = parse_version(version)[0]
    ours = parse_version(SCHEMA_VERSION)[0]
    if major != ours:
        raise SchemaVersionError(
            f"{where} has corpus schema version {version}, but this flywheel reads {ours}.x.x; "
            f"use a flywheel release that reads {major}.x.x or migrate the corpus"
        )


@dataclass(frozen=True, kw_only=True)
class Feature:
    """One array of an episode, declared once for the whole corpus."""

    name: str
    """Path inside an episode group, e.g. `obs/joint_pos`, `images/front`, `action`."""
    dtype: str
    """NumPy dtype name of the stored values (`float32`, `uint8`, `bool`, ...)."""
    shape: tuple[int, ...]
    """Shape of one step (without the time axis); images are (H, W, C)."""
    kind: Kind
    """What the array is, so readers know how to treat it (normalise, decode, ignore)."""
    units: str = ""
    """Physical units, e.g. `rad`, `m`, `s`; empty when unitless."""
    codec: str = "zstd"
    """Storage codec: `zstd`/`none` for arrays, `jpeg`/`png`/`raw` for images."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.kind not in KINDS:
            raise ValueError(f"feature {self.name}: kind {self.kind!r} not in {KINDS}")
        np.dtype(self.dtype)  # raises TypeError for unknown dtypes
        allowed = IMAGE_CODECS if self.kind == "image" else ARRAY_CODECS
        if self.codec not in allowed:
            raise ValueError(f"feature {self.name}: codec {self.codec!r} not in {allowed}")
        if self.kind == "image" and (self.dtype != "uint8" or len(self.shape) not in (2, 3)):
            raise ValueError(f"feature {self.name}: images are uint8 (H, W) or (H, W, C)")

    def to_json(self) -> dict[str, Any]:
        """JSON form stored in the root metadata."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Feature:
        """Inverse of `to_json`."""
        return cls(**{**d, "shape": tuple(d["shape"])})


CORE_FEATURES: dict[str, Feature] = {
    f.name: f
    for f in (
        Feature(name="action", dtype="float32", shape=(), kind="action"),
        Feature(name="reward", dtype="float32", shape=(), kind="reward"),
        Feature(name="terminated", dtype="bool", shape=(), kind="flag"),
        Feature(name="truncated", dtype="bool", shape=(), kind="flag"),
        Feature(name="timestamp", dtype="float64", shape=(), kind="time", units="s"),
    )
}
"""Arrays every episode has. `action`'s per-step shape is fixed by the first episode written."""


@dataclass(frozen=True)
class FeatureSpec:
    """The corpus's declared features by name; adding is allowed, changing is not."""

    features: dict[str, Feature] = field(default_factory=dict)

    def get(self, name: str) -> Feature | None:
        """The declared feature, or None when the corpus has not seen it yet."""
        return self.features.get(name)

    def merged(self, new: list[Feature]) -> FeatureSpec:
        """A spec with `new` features added; an existing name must be declared identically."""
        out = dict(self.features)
        for f in new:
            old = out.get(f.name)
            if old is not None and old != f:
                raise ValueError(f"feature {f.name} is already declared as {old}, not {f}")
            out[f.name] = f
        return FeatureSpec(out)

    def to_json(self) -> list[dict[str, Any]]:
        """JSON form, sorted by name so the root metadata diff stays readable."""
        return [self.features[k].to_json() for k in sorted(self.features)]

    @classmethod
    def from_json(cls, items: list[dict[str, Any]]) -> FeatureSpec:
        """Inverse of `to_json`."""
        return cls({d["name"]: Feature.from_json(d) for d in items})
