"""Decode camera videos into frames and their timestamps, with OpenCV first and PyAV second.

OpenCV's FFmpeg (the opencv-python-headless wheel) decodes H.264, HEVC and MPEG-4 and seeks
them correctly, but has no AV1 decoder here, and AV1 is what LeRobot writes by default. So a
file OpenCV cannot open or decode goes to PyAV (its wheel bundles dav1d) when it is installed;
without it the episode is quarantined with the codec named and the fix (`pip install av`).

A reader stays open across the episodes of one file (LeRobot v3 packs many episodes into one
mp4): reading episodes in order then decodes the file once. Each frame is fitted (resized,
RGB) as it is decoded, so a long 640x480 episode never sits in memory at full size.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flywheel.ingest.errors import IngestError
from flywheel.ingest.frames import Size, fit_frame


@dataclass(frozen=True, kw_only=True)
class DecodedVideo:
    """Frames of one time range of a video, fitted to the target size."""

    frames: np.ndarray
    """(N, H, W, 3) uint8 RGB."""
    times: np.ndarray
    """(N,) float64 presentation times, seconds from the file's start."""
    native_size: Size
    backend: str
    """`opencv` or `pyav`."""
    codec: str

    def expect_frames(self, n: int, other: str, *, file: str, field: str, where: str = "") -> None:
        """Refuse a video whose frame count differs from `n`, the count `other` describes
        (e.g. "table has 30 rows"): a dropped or extra frame shifts every image in time."""
        if len(self.frames) != n:
            raise IngestError(
                file,
                field,
                f"frame count mismatch: video has {len(self.frames)} frames{where}, {other}",
            )


class VideoReader:
    """Sequential, resumable reader of one video file."""

    def __init__(self, path: str | Path, field: str) -> None:
        self.path = Path(path)
        self.field = field
        if not self.path.is_file():
            raise IngestError(str(self.path), field, "video file is missing")
        if self.path.stat().st_size == 0:
            raise IngestError(str(self.path), field, "video file is empty (0 bytes)")
        self._impl: _CvVideo | _AvVideo = _open(self.path, field)
        self.backend = self._impl.backend
        self.codec = self._impl.codec
        self.container_frames = self._impl.container_frames
        self.native_size = self._impl.native_size

    def read(
        self,
        start: float = 0.0,
        end: float = math.inf,
        size: Size | Callable[[Size], Size] | None = None,
        tolerance: float = 1e-3,
    ) -> DecodedVideo:
        """Frames with start - tol <= pts < end - tol, fitted to `size` (a size, a function of
        the native size, or None for native)."""
        size = size(self.native_size) if callable(size) else (size or self.native_size)
        lo, hi = start - tolerance, end - tolerance
        self._impl.seek(lo)
        chunks: list[np.ndarray] = []
        times: list[float] = []
        if math.isinf(end):
            cap = (self.container_frames or 254) + 2
        else:
            cap = max(int((end - start) * (self._impl.fps or 30)) + 4, 4)
        buf = np.empty((cap, *size, 3), dtype=np.uint8)
        n = 0
        for pts, frame in self._impl.frames():
            if pts < lo:
                continue
            if pts >= hi:
                self._impl.push_back(pts, frame)
                break
            if n == len(buf):
                chunks.append(buf)
                buf = np.empty((len(buf), *size, 3), dtype=np.uint8)
                n = 0
            fit_frame(frame, size, bgr=self._impl.bgr, out=buf[n])
            times.append(pts)
            n += 1
        chunks.append(buf[:n])
        frames = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        whole = math.isinf(end) and start <= 0
        if whole and self.container_frames and len(times) < self.container_frames:
            raise IngestError(
                str(self.path),
                self.field,
                f"truncated or undecodable video ({self.codec}): decoded {len(times)} of the "
                f"{self.container_frames} frames its container lists",
            )
        return DecodedVideo(
            frames=frames,
            times=np.asarray(times, dtype=np.float64),
            native_size=self.native_size,
            backend=self.backend,
            codec=self.codec,
        )

    def close(self) -> None:
        self._impl.close()


def _fourcc(cap: cv2.VideoCapture) -> str:
    v = int(cap.get(cv2.CAP_PROP_FOURCC))
    s = "".join(chr((v >> 8 * i) & 0xFF) for i in range(4)).strip("\x00 ")
    return s if s.isprintable() and s else f"fourcc {v}"


def _open(path: Path, field: str) -> _CvVideo | _AvVideo:
    """OpenCV if it can decode the first frame, else PyAV, else an error naming the codec."""
    cv = _CvVideo(path)
    if cv.ok:
        return cv
    codec = cv.codec
    cv.close()
    try:
        import av  # noqa: F401  (optional: needed for AV1)
    except ImportError:
        hint = " (OpenCV cannot decode it; `pip install av` adds an AV1 decoder)" if codec else ""
        raise IngestError(
            str(path), field, f"unreadable, truncated or undecodable video ({codec or '?'}){hint}"
        ) from None
    try:
        return _AvVideo(path)
    except Exception as e:  # PyAV raises its own error family per FFmpeg failure
        raise IngestError(
            str(path), field, f"unreadable, truncated or undecodable video ({codec or '?'}): {e}"
        ) from None


class _Backend(ABC):
    """Position bookkeeping shared by both decoders: frames are consumed strictly in order.

    `_done` is the time of the last frame consumed; a frame looked at and pushed back (the
    first one past a range's end) stays pending, so the next range starts with it.
    """

    backend = ""
    bgr = False
    fps: float | None = None
    container_frames: int | None = None
    native_size: Size = (0, 0)
    codec = ""

    def __init__(self) -> None:
        self._pending: tuple[float, np.ndarray] | None = None
        self._done = -math.inf
        self._before = -math.inf

    def seek(self, t: float) -> None:
        """Make sure no frame at or after `t` has been consumed; jump only when far off."""
        if self._done < t and t - max(self._done, 0.0) < 2.0:
            return  # a little ahead: decoding forward is cheaper than a seek
        self._pending, self._done = None, -math.inf
        self._jump(t)

    def push_back(self, pts: float, frame: np.ndarray) -> None:
        """Un-consume the frame just yielded (the first one past a range)."""
        self._pending, self._done = (pts, frame), self._before

    def frames(self) -> Iterator[tuple[float, np.ndarray]]:
        if self._pending is not None:
            item, self._pending = self._pending, None
            self._before, self._done = self._done, item[0]
            yield item
        while (item := self._next()) is not None:
            self._before, self._done = self._done, item[0]
            yield item

    @abstractmethod
    def _jump(self, t: float) -> None:
        """Position the decoder at or before time `t`."""

    @abstractmethod
    def _next(self) -> tuple[float, np.ndarray] | None:
        """The next (pts, frame), or None at the end of the stream."""

    @abstractmethod
    def close(self) -> None:
        """Release the decoder."""


class _CvVideo(_Backend):
    """OpenCV's FFmpeg backend; frames come out BGR."""

    backend = "opencv"
    bgr = True

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        self.codec = _fourcc(self.cap) if self.cap.isOpened() else ""
        self.ok = False
        if not self.cap.isOpened():
            return
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS)) or None
        n = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.container_frames = n if n > 0 else None
        first = self._next()
        if first is None:
            return
        self.ok = True
        self.native_size = (int(first[1].shape[0]), int(first[1].shape[1]))
        self._pending = first

    def _next(self) -> tuple[float, np.ndarray] | None:
        ok, frame = self.cap.read()
        if not ok or frame is None:
            return None
        return float(self.cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0, frame

    def _jump(self, t: float) -> None:
        """Seek a second early and check where we landed; start over if the seek overshot."""
        if t > 1.0:
            self.cap.set(cv2.CAP_PROP_POS_MSEC, (t - 1.0) * 1000.0)
            first = self._next()
            if first is not None and first[0] <= t:
                self._pending = first
                return
        self.cap.release()
        self.cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)

    def close(self) -> None:
        self.cap.release()


class _AvVideo(_Backend):
    """PyAV (FFmpeg with dav1d for AV1); frames come out RGB."""

    backend = "pyav"
    bgr = False

    def __init__(self, path: Path) -> None:
        import av

        super().__init__()
        self.path = path
        self.container = av.open(str(path))
        if not self.container.streams.video:
            raise ValueError("no video stream")
        self.stream = self.container.streams.video[0]
        self.codec = self.stream.codec_context.name
        self.fps = float(self.stream.average_rate) if self.stream.average_rate else None
        self.container_frames = int(self.stream.frames) or None
        self._iter: Iterator[Any] | None = None
        first = self._next()
        if first is None:
            raise ValueError("no frame decodes")
        self.native_size = (int(first[1].shape[0]), int(first[1].shape[1]))
        self._pending = first

    def _next(self) -> tuple[float, np.ndarray] | None:
        if self._iter is None:
            self._iter = self.container.decode(self.stream)
        try:
            f = next(self._iter)
        except StopIteration:
            return None
        except Exception:  # PyAV raises per FFmpeg error: a corrupt packet ends the readable part
            return None
        return float(f.time or 0.0), f.to_ndarray(format="rgb24")

    def _jump(self, t: float) -> None:
        """PyAV seeks to the keyframe at or before the target; decoding forward finds t."""
        target = max(t - 1.0, 0.0) / float(self.stream.time_base)
        self.container.seek(int(target), stream=self.stream, backward=True)
        self._iter = None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()


def decode_file(
    path: str | Path, field: str, size: Size | Callable[[Size], Size] | None = None
) -> DecodedVideo:
    """A whole video file (one episode's camera), checked against its container's frame count."""
    r = VideoReader(path, field)
    try:
        return r.read(0.0, math.inf, size)
    finally:
        r.close()
