"""Camera frames before they reach the corpus: sources that decode lazily, and fitting to size.

A 60 s camera at 640x480 is 1.6 GB of raw RGB, and a stream faster than the control rate has
frames no tick will use, so frame sources decode only the frames alignment picked. Every frame
leaves here as RGB uint8 (H, W, 3) at the size the corpus feature spec declares for the camera.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

Size = tuple[int, int]
"""(height, width) in pixels."""


class FrameSource(Protocol):
    """A camera stream's frames in recording order, decoded on demand."""

    native_size: Size

    def __len__(self) -> int: ...

    def load(self, indices: np.ndarray, size: Size) -> np.ndarray:
        """(len(indices), H, W, 3) uint8 RGB frames at `size`; raises ValueError if undecodable."""
        ...


def fit_frame(
    src: np.ndarray, size: Size, *, bgr: bool = False, out: np.ndarray | None = None
) -> np.ndarray:
    """One frame -> RGB uint8 at `size` (INTER_AREA: the right filter for shrinking).

    Grey and RGBA frames become RGB, so one camera key always holds one layout.
    """
    h, w = size
    if src.dtype != np.uint8:
        raise ValueError(f"frame dtype {src.dtype} is not uint8")
    if src.shape[:2] != (h, w):
        src = cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA)
    if src.ndim == 2 or src.shape[2] == 1:
        code = cv2.COLOR_GRAY2RGB
    elif src.shape[2] == 4:
        code = cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB
    elif src.shape[2] == 3:
        code = cv2.COLOR_BGR2RGB if bgr else None
    else:
        raise ValueError(f"frame with {src.shape[2]} channels is not an image")
    if code is None:
        if out is None:
            return np.ascontiguousarray(src)
        out[...] = src
        return out
    return cv2.cvtColor(src, code, dst=out)


class ArrayFrames:
    """Frames already in memory (HDF5 datasets, decoded videos)."""

    def __init__(self, frames: np.ndarray) -> None:
        if frames.ndim not in (3, 4) or frames.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 (N, H, W[, C]) frames, got {frames.dtype} {frames.shape}"
            )
        self.frames = frames
        self.native_size: Size = (int(frames.shape[1]), int(frames.shape[2]))

    def __len__(self) -> int:
        return len(self.frames)

    def load(self, indices: np.ndarray, size: Size) -> np.ndarray:
        idx = np.asarray(indices)
        whole = len(idx) == len(self.frames) and bool((idx == np.arange(len(idx))).all())
        sel = self.frames if whole else self.frames[idx]  # a decoded video is used whole
        if sel.shape[1:3] == size and sel.ndim == 4 and sel.shape[3] == 3:
            return sel
        out = np.empty((len(sel), *size, 3), dtype=np.uint8)
        for i, f in enumerate(sel):
            fit_frame(f, size, out=out[i])
        return out


class LazyFrames:
    """Frames decoded one by one from a per-frame decoder (ROS image messages, PNG rows)."""

    def __init__(
        self, count: int, decode: Callable[[int], tuple[np.ndarray, bool]], native_size: Size
    ) -> None:
        self._count = count
        self._decode = decode
        """frame index -> (frame, is_bgr); raises ValueError when it does not decode."""
        self.native_size = native_size

    def __len__(self) -> int:
        return self._count

    def load(self, indices: np.ndarray, size: Size) -> np.ndarray:
        out = np.empty((len(indices), *size, 3), dtype=np.uint8)
        cache: dict[int, int] = {}  # a frame used at several ticks is decoded once
        for j, i in enumerate(np.asarray(indices).tolist()):
            if i in cache:
                out[j] = out[cache[i]]
                continue
            frame, bgr = self._decode(i)
            if frame.shape[:2] != self.native_size:
                raise ValueError(
                    f"frame {i} is {frame.shape[1]}x{frame.shape[0]}, the stream's first frame "
                    f"is {self.native_size[1]}x{self.native_size[0]}"
                )
            fit_frame(frame, size, bgr=bgr, out=out[j])
            cache[i] = j
        return out
