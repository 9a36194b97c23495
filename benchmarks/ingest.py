"""Ingest benchmark: a 60 s real-robot episode with two 640x480 30 fps cameras, on one core.

    python -m benchmarks.ingest [--quick] [--image-size 240x320] [--seconds 60] [--codec h264]

Ours: `flywheel.ingest.ingest` of a LeRobot v2.1 dataset holding that episode into a fresh
corpus: parquet read, video decode, resize, alignment, JPEG encode, atomic commit (fsync).
Videos are MPEG-4 part 2 by default (the encoder OpenCV's wheel has), or H.264 (`--codec h264`,
written with PyAV), the codec LeRobot v2.x datasets often hold.
Anchor (the floor): OpenCV decoding the same two videos and nothing else, in the same run,
alternating with ours, median of the repeats. Both report source frames per second (the two
cameras' frames together). The issue's floor: the whole episode ingested in under 20 s.
One JSON object per line on stdout; tables on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np

from benchmarks import reporting
from benchmarks.reporting import one_core

H, W, FPS = 480, 640, 30
CAMERAS = ("front", "wrist")


def emit(metric: str, ours: float, anchor: str, anchor_value: float | None, **extra) -> None:
    reporting.emit("ingest", metric, ours, anchor, anchor_value, digits=4, **extra)


class _AvWriter:
    """H.264 (libx264, yuv420p) through PyAV, as LeRobot v2.x datasets often hold."""

    def __init__(self, path: Path) -> None:
        import av

        self.av = av
        self.out = av.open(str(path), "w")
        self.s = self.out.add_stream("libx264", rate=FPS)
        self.s.width, self.s.height, self.s.pix_fmt = W, H, "yuv420p"

    def write(self, bgr: np.ndarray) -> None:
        frame = self.av.VideoFrame.from_ndarray(bgr, format="bgr24")
        for p in self.s.encode(frame):
            self.out.mux(p)

    def release(self) -> None:
        for p in self.s.encode():
            self.out.mux(p)
        self.out.close()


def make_dataset(root: Path, seconds: float, codec: str = "mp4v") -> Path:
    """A LeRobot v2.1 dataset with one episode: 7-DoF state/action, two mp4 cameras.

    Frames are a textured gradient with moving shapes, so the codecs work as on camera images
    (flat synthetic frames would make decode and JPEG unrealistically cheap).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = int(seconds * FPS) + 1
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([xx * 255 // W, yy * 255 // H, np.full_like(xx, 90)], -1).astype(np.uint8)
    base = cv2.add(base, rng.integers(0, 12, (H, W, 3), dtype=np.uint8))
    writers = {}
    for c in CAMERAS:
        p = root / f"videos/chunk-000/observation.images.{c}/episode_000000.mp4"
        p.parent.mkdir(parents=True)
        if codec == "h264":
            writers[c] = _AvWriter(p)
        else:
            writers[c] = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    for i in range(n):
        for k, c in enumerate(CAMERAS):
            f = base.copy()
            x, y = int(320 + 200 * np.sin(i / 30 + k)), int(240 + 150 * np.cos(i / 45))
            cv2.circle(f, (x, y), 40, (255, 255, 255), -1)
            cv2.rectangle(f, (x - 110, y - 20), (x - 60, y + 20), (0, 0, 255), -1)
            writers[c].write(f)
    for w in writers.values():
        w.release()
    state = np.cumsum(rng.normal(0, 0.01, (n, 7)), 0).astype(np.float32)
    cols = {
        "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(state.reshape(-1)), 7),
        "action": pa.FixedSizeListArray.from_arrays(pa.array((state + 0.01).reshape(-1)), 7),
        "timestamp": pa.array((np.arange(n) / FPS).astype(np.float32)),
        "frame_index": pa.array(np.arange(n)),
        "episode_index": pa.array(np.zeros(n, dtype=np.int64)),
        "index": pa.array(np.arange(n)),
        "task_index": pa.array(np.zeros(n, dtype=np.int64)),
    }
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(pa.table(cols), root / "data/chunk-000/episode_000000.parquet")
    feats = {
        "observation.state": {"dtype": "float32", "shape": [7]},
        "action": {"dtype": "float32", "shape": [7]},
        "timestamp": {"dtype": "float32", "shape": [1]},
    } | {f"observation.images.{c}": {"dtype": "video", "shape": [H, W, 3]} for c in CAMERAS}
    info = {
        "codebase_version": "v2.1",
        "robot_type": "bench_arm",
        "fps": FPS,
        "chunks_size": 1000,
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": feats,
    }
    (root / "meta").mkdir()
    (root / "meta/info.json").write_text(json.dumps(info))
    ep = {"episode_index": 0, "tasks": ["bench"], "length": n}
    (root / "meta/episodes.jsonl").write_text(json.dumps(ep) + "\n")
    return root


def raw_decode(root: Path) -> tuple[float, int]:
    """The floor: OpenCV reads every frame of both videos, nothing else."""
    t = time.perf_counter()
    n = 0
    for p in sorted(root.glob("videos/**/*.mp4")):
        cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
        while cap.read()[0]:
            n += 1
        cap.release()
    return time.perf_counter() - t, n


def ours(root: Path, corpus_path: Path, image_size: tuple[int, int] | None) -> tuple[float, dict]:
    from flywheel.corpus import Corpus
    from flywheel.ingest import IngestConfig, ingest

    if corpus_path.exists():
        shutil.rmtree(corpus_path)
    t = time.perf_counter()
    c = Corpus.open_or_create(corpus_path)
    rep = ingest([root], c, IngestConfig(task="bench", image_size=image_size))
    dt = time.perf_counter() - t
    if len(rep.accepted) != 1:
        sys.exit(f"benchmark episode was not accepted: {rep.to_json()}")
    return dt, rep.to_json()


def bench(
    size_name: str, image_size, root: Path, tmp: Path, reps: int, n_frames: int, codec: str
) -> None:
    t_ours, t_raw = [], []
    ours(root, tmp / "warm.zarr", image_size)  # warm-up: imports, codecs, page cache
    for i in range(reps):
        dt, n = raw_decode(root)
        assert n == n_frames, (n, n_frames)
        t_raw.append(dt)
        t_ours.append(ours(root, tmp / f"c{i}.zarr", image_size)[0])
    shape = {"episode_s": round(n_frames / len(CAMERAS) / FPS, 2), "cameras": len(CAMERAS),
             "source": f"{W}x{H}@{FPS} {codec}", "stored": size_name, "reps": reps, "cores": 1}  # fmt: skip
    fps = lambda ts: n_frames / statistics.median(ts)  # noqa: E731
    emit("frames_per_s", fps(t_ours), "opencv-decode", fps(t_raw), **shape)
    emit("episode_seconds", statistics.median(t_ours), "floor", 20.0, **shape)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="one repeat, stored size only")
    ap.add_argument("--seconds", type=float, default=60.0, help="episode length")
    ap.add_argument("--image-size", default="240x320", help="HEIGHTxWIDTH stored, or native")
    ap.add_argument(
        "--codec", default="mp4v", choices=["mp4v", "h264"], help="h264 needs PyAV (libx264)"
    )
    args = ap.parse_args()
    import pyarrow

    import flywheel.ingest as fi

    print(json.dumps({
        "bench": "ingest", "metric": "versions", "python": platform.python_version(),
        "numpy": np.__version__, "opencv": cv2.__version__, "pyarrow": pyarrow.__version__,
        "machine": platform.machine(), "cpus": os.cpu_count(), "quick": args.quick,
    }), flush=True)  # fmt: skip
    sizes = [args.image_size] if args.quick else [args.image_size, "native"]
    with tempfile.TemporaryDirectory(prefix="fw-bench-ingest-") as d:
        tmp = Path(d)
        t = time.perf_counter()
        root = make_dataset(tmp / "ds", args.seconds, args.codec)
        n_frames = len(CAMERAS) * (int(args.seconds * FPS) + 1)
        print(f"dataset written in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        one_core()
        for s in sizes:
            size = None if s == "native" else fi.parse_size(s)
            name = s if size else f"{H}x{W}"
            bench(name, size, root, tmp, 1 if args.quick else 3, n_frames, args.codec)
    reporting.print_table("ingest", ("metric", "stored", "ours", "anchor", "anchor_value", "ratio"))


if __name__ == "__main__":
    main()
