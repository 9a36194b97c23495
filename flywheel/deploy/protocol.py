"""The controller wire protocol: msgpack maps over WebSocket binary frames, never pickle.

Client -> server                                    Server -> client
  {type: hello, protocol, token, expect: {...}}       {type: welcome, model: {...}, schema, limits}
  {type: reset}                                       {type: reset_ok, model: {...}}
  {type: act, seq, obs_age, obs: {key: array}}        {type: action, seq, action, status, ...}
  {type: episode_end, success, steps}                 {type: episode_ok, report}
  anything refused                                    {type: error, seq, code, message, action, status}

An array is {dtype, shape, data: raw little-endian bytes}; only numeric dtypes are accepted, and
the byte count must match the shape. `model` is the handshake: model_version, bundle_hash,
schema_hash, normalizer_hash, control_hz, chunk_len. `obs_age` is how old the observation was
when sent (seconds, the robot's clock), so no clock synchronisation is needed. Every error reply
carries a safe action, so a robot always has something safe to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

PROTOCOL = 1
DTYPES = frozenset({"float32", "float64", "uint8", "int32", "int64", "bool"})
"""Array dtypes a message may carry (no object or void dtypes: nothing decodes into code)."""
HANDSHAKE_KEYS = ("model_version", "schema_hash", "normalizer_hash", "control_hz", "chunk_len")
"""Fields both sides compare; a client refuses to run when one differs from what it expects."""


class ProtocolError(Exception):
    """A message that cannot be decoded; `code` goes into the error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def pack(msg: Mapping[str, Any]) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def unpack(data: bytes | str) -> dict[str, Any]:
    """Decode one message (its size already capped); ProtocolError for text frames, non-maps,
    extension types and malformed bytes."""
    if isinstance(data, str):
        raise ProtocolError("bad_message", "text frame; send msgpack in a binary frame")
    try:
        msg = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            ext_hook=_no_ext,
        )
    except ProtocolError:
        raise
    except Exception as e:  # msgpack raises several unrelated types for malformed input
        raise ProtocolError(
            "bad_message", f"not a msgpack message ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("bad_message", "a message is a map with a string 'type'")
    return msg


def _no_ext(code: int, data: bytes) -> Any:
    raise ProtocolError("bad_message", f"msgpack extension type {code} is not accepted")


def encode_array(x: np.ndarray) -> dict[str, Any]:
    x = np.ascontiguousarray(x)
    return {"dtype": x.dtype.name, "shape": list(x.shape), "data": x.tobytes()}


def decode_array(key: str, doc: Any) -> np.ndarray:
    """An array from {dtype, shape, data}; ProtocolError naming the key on anything odd."""
    if not isinstance(doc, dict) or set(doc) != {"dtype", "shape", "data"}:
        raise ProtocolError("schema", f"obs[{key!r}]: expected {{dtype, shape, data}}")
    dtype, shape, data = doc["dtype"], doc["shape"], doc["data"]
    if dtype not in DTYPES:
        raise ProtocolError(
            "schema", f"obs[{key!r}]: dtype {dtype!r} not accepted ({sorted(DTYPES)})"
        )
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise ProtocolError("schema", f"obs[{key!r}]: shape must be a list of sizes")
    if not isinstance(data, bytes):
        raise ProtocolError("schema", f"obs[{key!r}]: data must be bytes")
    dt = np.dtype(dtype).newbyteorder("<")
    if len(data) != int(np.prod(shape)) * dt.itemsize:
        raise ProtocolError(
            "schema", f"obs[{key!r}]: {len(data)} bytes do not fit shape {shape} {dtype}"
        )
    return np.frombuffer(data, dtype=dt).reshape(shape).astype(dtype)  # an owned, writable copy


def encode_obs(obs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {k: encode_array(np.asarray(v)) for k, v in obs.items()}


def decode_obs(doc: Any) -> dict[str, np.ndarray]:
    if not isinstance(doc, dict):
        raise ProtocolError("schema", "obs must be a map from key to array")
    return {str(k): decode_array(str(k), v) for k, v in doc.items()}


def mismatches(expect: Mapping[str, Any], model: Mapping[str, Any]) -> list[str]:
    """Handshake fields where `model` differs from a non-None expectation."""
    out = []
    for key in HANDSHAKE_KEYS:
        want = expect.get(key)
        if want is None:
            continue
        got = model.get(key)
        try:
            same = abs(float(want) - float(got)) < 1e-9 if key == "control_hz" else want == got
        except (TypeError, ValueError):
            same = False
        if not same:
            out.append(f"{key}: server has {got!r}, expected {want!r}")
    return out
