"""ROS 2 bags in MCAP, read with `mcap` + `mcap-ros2-support` (no ROS install needed).

The bag is read as a stream, record by record, never through its footer index: a recorder that
crashed leaves no footer or summary, a seeking reader then fails at once, and a streaming reader
still recovers every whole message before the cut (every whole chunk, for chunked files). Such a
bag is ingested up to that point and its episodes say so in `info["recovered"]`.

Which topic is which observation, camera and action, and where episodes start and end, comes
from a mapping file (`flywheel.ingest.mapping`). Supported messages: sensor_msgs/JointState,
Image, CompressedImage, geometry_msgs/PoseStamped, Pose, TwistStamped, Twist, std_msgs
Float32/Float64(MultiArray) and String (episode markers); any other type through a `field` path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flywheel.ingest.alignment import Stream
from flywheel.ingest.assemble import Recording
from flywheel.ingest.config import as_label
from flywheel.ingest.errors import IngestError
from flywheel.ingest.frames import LazyFrames
from flywheel.ingest.hashing import SourceHash
from flywheel.ingest.mapping import Mapping, TopicMap
from flywheel.ingest.sources import IngestContext, SourceEpisode

name = "mcap"


def detect(path: Path) -> bool:
    """An `.mcap` file, or a ROS 2 bag folder holding some."""
    if path.is_file():
        return path.suffix == ".mcap"
    return path.is_dir() and any(path.glob("*.mcap"))


@dataclass
class _Topic:
    """Messages of one topic in file order: times and raw CDR (decoded again where used)."""

    schema: str = ""
    decoder: Any = None
    log: list[float] = field(default_factory=list)
    header: list[float | None] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)


@dataclass
class _Bag:
    files: list[Path]
    topics: dict[str, _Topic]
    recovered: dict[str, Any] | None


def _schema(name_: str) -> str:
    """`sensor_msgs/msg/JointState` and `sensor_msgs/JointState` -> `sensor_msgs/JointState`."""
    return name_.replace("/msg/", "/")


def _stamp(msg: Any) -> float | None:
    h = getattr(msg, "header", None)
    st = getattr(h, "stamp", None)
    if st is None:
        return None
    return float(st.sec) + float(st.nanosec) * 1e-9


def _read_bag(files: list[Path], wanted: set[str], image_topics: set[str]) -> _Bag:
    """Stream every record; keep decoded values for low-dim topics, CDR bytes for cameras."""
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader
    from mcap_ros2.decoder import DecoderFactory

    topics: dict[str, _Topic] = {}
    recovered = None
    for path in files:
        factory = DecoderFactory()
        schemas: dict[int, Schema] = {}
        channels: dict[int, Channel] = {}
        count = 0
        try:
            with open(path, "rb") as f:
                for rec in StreamReader(f, validate_crcs=False).records:
                    if isinstance(rec, Schema):
                        schemas[rec.id] = rec
                    elif isinstance(rec, Channel):
                        channels[rec.id] = rec
                    elif isinstance(rec, Message):
                        ch = channels.get(rec.channel_id)
                        if ch is None or ch.topic not in wanted:
                            continue
                        schema = schemas.get(ch.schema_id)
                        decoder = factory.decoder_for(ch.message_encoding, schema)
                        if decoder is None:
                            raise IngestError(
                                str(path), ch.topic, f"cannot decode encoding {ch.message_encoding}"
                            )
                        msg = decoder(rec.data)
                        t = topics.setdefault(
                            ch.topic, _Topic(schema=_schema(schema.name), decoder=decoder)
                        )
                        t.log.append(rec.log_time * 1e-9)
                        t.header.append(_stamp(msg))
                        t.values.append(rec.data if ch.topic in image_topics else msg)
                        count += 1
        except IngestError:
            raise
        except Exception as e:  # McapError, struct.error, zstd/lz4 errors: all end the stream
            # a crashed recorder (cut record, damaged chunk): keep every whole message before it
            if count == 0 and not topics:
                raise IngestError(
                    str(path), "(file)", f"unreadable MCAP: {e or type(e).__name__}"
                ) from None
            recovered = {"file": str(path), "error": f"{type(e).__name__}: {e}", "messages": count}
    return _Bag(files=files, topics=topics, recovered=recovered)


def _vector(msg: Any, schema: str, m: TopicMap, where: str, i: int) -> np.ndarray:
    """The numbers a message holds for one key."""
    if schema == "sensor_msgs/JointState":
        attr = m.field or "position"
        values = list(getattr(msg, attr, None) or [])
        if m.joints is not None:
            names = list(msg.name)
            missing = [j for j in m.joints if j not in names]
            if missing:
                raise IngestError(where, f"{m.topic}.name", f"message {i} lacks joint(s) {missing}")
            values = [values[names.index(j)] for j in m.joints] if values else []
        return np.asarray(values, dtype=np.float64)
    if m.field:
        v: Any = msg
        for part in m.field.split("."):
            if not hasattr(v, part):
                raise IngestError(where, f"{m.topic}.{m.field}", f"{schema} has no field {part!r}")
            v = getattr(v, part)
        if hasattr(v, "x") and hasattr(v, "y"):  # a Vector3/Point
            v = [v.x, v.y, v.z]
        return np.atleast_1d(np.asarray(v, dtype=np.float64))
    if schema in ("geometry_msgs/PoseStamped", "geometry_msgs/Pose"):
        p = msg.pose if schema.endswith("Stamped") else msg
        o = p.orientation
        return np.array([p.position.x, p.position.y, p.position.z, o.x, o.y, o.z, o.w])
    if schema in ("geometry_msgs/TwistStamped", "geometry_msgs/Twist"):
        w = msg.twist if schema.endswith("Stamped") else msg
        return np.array([w.linear.x, w.linear.y, w.linear.z, w.angular.x, w.angular.y, w.angular.z])
    if schema.startswith("std_msgs/Float") and hasattr(msg, "data"):
        return np.atleast_1d(np.asarray(msg.data, dtype=np.float64))
    raise IngestError(where, m.topic, f"message type {schema} needs a `field` in the mapping")


_RAW = {
    "rgb8": (3, False),
    "bgr8": (3, True),
    "rgba8": (4, False),
    "bgra8": (4, True),
    "mono8": (1, False),
}


def _image(schema: str, msg: Any) -> tuple[np.ndarray, bool]:
    """One Image/CompressedImage message -> ((H, W[, C]) uint8, is_bgr); ValueError if not."""
    if schema == "sensor_msgs/CompressedImage":
        img = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"compressed image ({msg.format}) does not decode")
        return img, img.ndim == 3
    if schema == "sensor_msgs/Image":
        if msg.encoding not in _RAW:
            raise ValueError(f"image encoding {msg.encoding!r} is not supported ({sorted(_RAW)})")
        ch, bgr = _RAW[msg.encoding]
        buf = np.frombuffer(bytes(msg.data), np.uint8)
        need = msg.height * msg.step
        if len(buf) < need or msg.step < msg.width * ch:
            raise ValueError(f"image data is {len(buf)} bytes, expected {need}")
        img = buf[:need].reshape(msg.height, msg.step)[:, : msg.width * ch]
        return img.reshape(msg.height, msg.width, ch), bgr
    raise ValueError(f"{schema} is not an image message")


def _frames(t: _Topic, sel: np.ndarray, topic: str, where: str) -> LazyFrames:
    """Camera frames decoded from their CDR bytes only where a tick uses them."""
    cdr = [t.values[j] for j in sel]

    def decode(i: int) -> tuple[np.ndarray, bool]:
        return _image(t.schema, t.decoder(cdr[i]))

    try:
        first, _ = decode(0)
    except ValueError as e:
        raise IngestError(where, topic, f"message {int(sel[0])}: {e}") from None
    return LazyFrames(len(cdr), decode, (int(first.shape[0]), int(first.shape[1])))


def episodes(path: Path, ctx: IngestContext) -> Iterator[SourceEpisode]:
    """Episodes of one bag (file or folder), split by the mapping's episode markers."""
    m = ctx.mapping
    if not isinstance(m, Mapping):
        yield SourceEpisode(
            source=str(path),
            error=IngestError(
                str(path), "--mapping", "a ROS 2 bag needs a mapping file (TOML/YAML)"
            ),
        )
        return
    files = [path] if path.is_file() else sorted(path.glob("*.mcap"))
    images = {tm.topic for tm in m.images.values()}
    wanted = {tm.topic for tm in [*m.obs.values(), *m.images.values(), m.action]}
    wanted |= {m.reward.topic} if m.reward else set()
    wanted |= {m.episode_topic} if m.episode_topic else set()
    try:
        bag = _read_bag(files, wanted, images)
    except IngestError as e:
        yield SourceEpisode(source=str(path), error=e)
        return
    h0 = SourceHash("ros2-mcap")
    for f in files:
        h0.file(f)
    task = ctx.config.task or m.task or as_label(path.stem)
    robot = ctx.config.robot or m.robot or "unknown"
    h0.add(task, robot, m.to_json() | {"path": None})
    try:
        segments = _segments(bag, m, str(path))
    except IngestError as e:
        yield SourceEpisode(source=str(path), error=e)
        return
    if not segments:
        yield SourceEpisode(
            source=str(path),
            error=IngestError(str(path), m.episode_topic or "", "no `start` marker: no episode"),
        )
    for i, (start, end, success, note) in enumerate(segments):
        h = SourceHash("ros2-mcap").add(h0.value(), i)
        label = f"{path}#{i}"
        yield SourceEpisode(
            source=label,
            source_hash=h.value(),
            read=lambda s=start, e=end, ok=success, n=note, lb=label: _recording(
                bag, m, ctx, str(path), lb, s, e, ok, n, task, robot
            ),
        )


def _times(t: _Topic, tm: TopicMap, m: Mapping) -> np.ndarray:
    clock = tm.time or m.time
    if clock == "header" and all(s is not None for s in t.header):
        return np.asarray(t.header, dtype=np.float64)
    return np.asarray(t.log, dtype=np.float64)


def _segments(
    bag: _Bag, m: Mapping, where: str
) -> list[tuple[float | None, float | None, bool | None, str | None]]:
    """(start, end, success, note) per episode: markers, or the whole bag as one."""
    if not m.episode_topic:
        return [(None, None, m.success, None)]
    t = bag.topics.get(m.episode_topic)
    if t is None:
        raise IngestError(where, m.episode_topic, "missing topic (the mapping's [episodes])")
    out = []
    start = None
    for time, msg in zip(t.log, t.values, strict=True):
        text = str(getattr(msg, "data", "")).strip().lower()
        if text.startswith("start"):
            start = time
        elif text.startswith("end") and start is not None:
            ok = True if "success" in text else False if "fail" in text else m.success
            out.append((start, time, ok, None))
            start = None
    if start is not None:
        out.append((start, None, m.success, "no end marker (recording stopped)"))
    return out


def _recording(
    bag: _Bag,
    m: Mapping,
    ctx: IngestContext,
    where: str,
    label: str,
    start: float | None,
    end: float | None,
    success: bool | None,
    note: str | None,
    task: str,
    robot: str,
) -> Recording:
    streams: list[Stream] = []
    items = [(f"obs/{k}", tm) for k, tm in m.obs.items()]
    items += [(f"images/{k}", tm) for k, tm in m.images.items()]
    items += [("action", m.action)] + ([("reward", m.reward)] if m.reward else [])
    for key, tm in items:
        t = bag.topics.get(tm.topic)
        if t is None or not t.log:
            have = sorted(bag.topics)
            raise IngestError(where, tm.topic, f"missing topic for {key} (bag has {have})")
        times = _times(t, tm, m)
        order = np.argsort(np.asarray(t.log), kind="stable")  # receive order
        times = times[order]
        lo = 0
        hi = len(times)
        if start is not None:
            lo = max(int(np.searchsorted(times, start - tm.latency_s, side="right")) - 1, 0)
        if end is not None:
            hi = int(np.searchsorted(times, end - tm.latency_s + 1e-9, side="right"))
        sel = order[lo:hi]
        if len(sel) == 0:
            raise IngestError(where, tm.topic, f"no messages inside the episode for {key}")
        if key.startswith("images/"):
            values: Any = _frames(t, sel, tm.topic, where)
        else:
            rows = [_vector(t.values[j], t.schema, tm, where, int(j)) for j in sel]
            width = {len(r) for r in rows}
            if len(width) > 1:
                first = len(rows[0])
                j = next(k for k, r in enumerate(rows) if len(r) != first)
                raise IngestError(
                    where,
                    tm.topic,
                    f"shape mismatch: message {int(sel[j])} has {len(rows[j])} values, the first has {first}",
                )
            if width == {0}:
                raise IngestError(
                    where, f"{tm.topic}.{tm.field or 'position'}", "messages hold no values"
                )
            values = np.stack(rows)
        streams.append(
            Stream(
                key=key,
                field=tm.topic,
                file=where,
                times=times[lo:hi],
                values=values,
                latency_s=tm.latency_s,
                rate_hz=tm.rate_hz,
            )
        )
    info: dict[str, Any] = {
        "format": "ros2-mcap",
        "bag": [str(f) for f in bag.files],
        "mapping": m.path,
        "instruction": m.instruction,
        "topics": {k: tm.topic for k, tm in items},
        "time": m.time,
    }
    if m.obs:
        info["joints"] = {k: list(tm.joints) for k, tm in m.obs.items() if tm.joints}
    if bag.recovered:
        info["recovered"] = bag.recovered
    if note:
        info["note"] = note
    if m.extra:
        info["mapping_extra"] = m.extra
    return Recording(
        source=label,
        file=where,
        streams=streams,
        control_hz=m.control_hz,
        start=start,
        end=end,
        task=task,
        robot=robot,
        operator=ctx.config.operator or m.operator,
        success=success,
        info=info,
    )
