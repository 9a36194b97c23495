"""Episode video export with OpenCV, so a person can watch what a camera recorded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np


def write_mp4(
    path: Path,
    frames: np.ndarray,
    *,
    fps: float,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write (T, H, W[, 3]) uint8 RGB frames as an mp4 (mp4v); returns the frame count."""
    if frames.ndim not in (3, 4) or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(
            f"expected non-empty uint8 (T, H, W[, 3]) frames, got {frames.dtype} {frames.shape}"
        )
    h, w = frames.shape[1:3]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"OpenCV could not open {path} for writing (mp4v)")
    try:
        for f in frames:
            bgr = cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) if f.ndim == 2 else f[..., ::-1]
            writer.write(np.ascontiguousarray(bgr))
            if progress is not None:
                progress(1)
    finally:
        writer.release()
    return len(frames)
