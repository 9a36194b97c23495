"""Small recordings written with each format's own writers: pyarrow, OpenCV VideoWriter, the
`mcap` ROS 2 writer, h5py, numpy. Frames carry their index as brightness (a flat image survives
lossy codecs), so a test can tell which source frame landed at which tick."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

H, W = 24, 32


PERIOD = 38
"""Frame indices are encoded modulo this many levels."""


def level(i: int) -> int:
    """Brightness that encodes frame i modulo PERIOD (steps of 6 survive mp4v's -3 and JPEG)."""
    return 20 + 6 * (i % PERIOD)


def frame_index(frame: np.ndarray) -> int:
    """Inverse of `level` for a decoded frame: the source frame index modulo PERIOD."""
    return round((float(frame.mean()) + 1.5 - 20) / 6) % PERIOD


def frames(n: int, start: int = 0) -> np.ndarray:
    """(n, H, W, 3) uint8 RGB, flat grey at `level(start + i)`."""
    out = np.empty((n, H, W, 3), dtype=np.uint8)
    for i in range(n):
        out[i] = level(start + i)
    return out


def write_mp4(path: Path, rgb: np.ndarray, fps: float) -> Path:
    """An mp4 (MPEG-4 part 2, the encoder OpenCV's wheel has) of RGB frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = rgb.shape[1:3]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened(), path
    for f in rgb:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    return path


def write_pyav(path: Path, rgb: np.ndarray, fps: int, codec: str = "libsvtav1") -> Path:
    """An mp4 written with PyAV: AV1 as LeRobot writes it (libsvtav1, yuv420p, GOP 2), or
    H.264 (libx264) / HEVC (libx265)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = rgb.shape[2], rgb.shape[1], "yuv420p"
        s.options = {"g": "2"} if codec == "libsvtav1" else {"x265-params": "log-level=error"}
        for f in rgb:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


# --- LeRobot ------------------------------------------------------------------------------


def _features(state_dim: int, action_dim: int, cams: list[str], fps: int) -> dict:
    f = {
        "observation.state": {
            "dtype": "float32",
            "shape": [state_dim],
            "names": [f"j{i}" for i in range(state_dim)],
        },
        "action": {"dtype": "float32", "shape": [action_dim], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    for c in cams:
        f[f"observation.images.{c}"] = {
            "dtype": "video",
            "shape": [H, W, 3],
            "names": ["height", "width", "channels"],
            "info": {"video.fps": fps, "video.codec": "mpeg4"},
        }
    return f


def episode_rows(ep: int, n: int, first_index: int, fps: int, seed: int = 0) -> dict:
    """Columns of one LeRobot episode: state = (ep, t, ...), action = state + 0.5."""
    rng = np.random.default_rng(seed + ep)
    state = rng.normal(size=(n, 4)).astype(np.float32)
    state[:, 0] = ep
    state[:, 1] = np.arange(n)
    return {
        "observation.state": state,
        "action": (state[:, :3] + 0.5).astype(np.float32),
        "timestamp": (np.arange(n) / fps).astype(np.float32),
        "frame_index": np.arange(n, dtype=np.int64),
        "episode_index": np.full(n, ep, dtype=np.int64),
        "index": np.arange(first_index, first_index + n, dtype=np.int64),
        "task_index": np.zeros(n, dtype=np.int64),
    }


def _table(cols: dict):
    import pyarrow as pa

    arrays = {}
    for k, v in cols.items():
        if isinstance(v, np.ndarray) and v.ndim == 2:
            arrays[k] = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1])
        elif isinstance(v, list):
            arrays[k] = pa.array(v)
        else:
            arrays[k] = pa.array(v)
    return pa.table(arrays)


def lerobot_v21(
    root: Path,
    lengths: list[int],
    *,
    fps: int = 10,
    cams: tuple[str, ...] = ("front",),
    mutate=None,
    video_frames: dict[int, int] | None = None,
) -> Path:
    """A v2.1 dataset: one parquet and one mp4 per camera per episode.

    `mutate(ep, cols)` may damage an episode's columns; `video_frames[ep]` writes fewer frames.
    """
    import pyarrow.parquet as pq

    info = {
        "codebase_version": "v2.1",
        "robot_type": "so100",
        "fps": fps,
        "chunks_size": 1000,
        "total_episodes": len(lengths),
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": _features(4, 3, list(cams), fps),
    }
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    eps, first = [], 0
    for ep, n in enumerate(lengths):
        cols = episode_rows(ep, n, first, fps)
        if mutate is not None:
            cols = mutate(ep, cols) or cols
        path = root / f"data/chunk-000/episode_{ep:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_table(cols), path)
        for c in cams:
            nf = (video_frames or {}).get(ep, n)
            write_mp4(
                root / f"videos/chunk-000/observation.images.{c}/episode_{ep:06d}.mp4",
                frames(nf, start=10 * ep),
                fps,
            )
        eps.append({"episode_index": ep, "tasks": ["pick up the cube"], "length": n})
        first += n
    (root / "meta" / "episodes.jsonl").write_text("\n".join(json.dumps(e) for e in eps) + "\n")
    (root / "meta" / "tasks.jsonl").write_text(
        json.dumps({"task_index": 0, "task": "pick up the cube"}) + "\n"
    )
    return root


def lerobot_v30(
    root: Path,
    lengths: list[int],
    *,
    fps: int = 10,
    cams: tuple[str, ...] = ("front",),
    task_column: str = "task",
) -> Path:
    """A v3.0 dataset: all episodes in one parquet file and one mp4 per camera."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    info = {
        "codebase_version": "v3.0",
        "robot_type": "koch",
        "fps": fps,
        "chunks_size": 1000,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": _features(4, 3, list(cams), fps),
    }
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    all_cols: dict[str, list] = {}
    ep_rows, first = [], 0
    for ep, n in enumerate(lengths):
        cols = episode_rows(ep, n, first, fps)
        for k, v in cols.items():
            all_cols.setdefault(k, []).append(v)
        row = {
            "episode_index": ep,
            "tasks": [f"task {ep % 2}"],
            "length": n,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": first,
            "dataset_to_index": first + n,
        }
        for c in cams:
            key = f"observation.images.{c}"
            row |= {
                f"videos/{key}/chunk_index": 0,
                f"videos/{key}/file_index": 0,
                f"videos/{key}/from_timestamp": first / fps,
                f"videos/{key}/to_timestamp": (first + n) / fps,
            }
        ep_rows.append(row)
        first += n
    data = root / "data/chunk-000/file-000.parquet"
    data.parent.mkdir(parents=True)
    pq.write_table(_table({k: np.concatenate(v) for k, v in all_cols.items()}), data)
    for c in cams:
        write_mp4(
            root / f"videos/observation.images.{c}/chunk-000/file-000.mp4", frames(first), fps
        )
    pq.write_table(pa.Table.from_pylist(ep_rows), root / "meta/episodes/chunk-000/file-000.parquet")
    tasks = pa.table({task_column: ["task 0", "task 1"], "task_index": [0, 1]})
    pq.write_table(tasks, root / "meta/tasks.parquet")
    return root


# --- ROS 2 bags ---------------------------------------------------------------------------

_TIME = "MSG: builtin_interfaces/Time\nint32 sec\nuint32 nanosec"
_HEADER = "MSG: std_msgs/Header\nbuiltin_interfaces/Time stamp\nstring frame_id"
_SEP = "\n" + "=" * 80 + "\n"
MSGDEFS = {
    "sensor_msgs/msg/JointState": "std_msgs/Header header\nstring[] name\nfloat64[] position\n"
    "float64[] velocity\nfloat64[] effort" + _SEP + _HEADER + _SEP + _TIME,
    "sensor_msgs/msg/Image": "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\n"
    "uint8 is_bigendian\nuint32 step\nuint8[] data" + _SEP + _HEADER + _SEP + _TIME,
    "sensor_msgs/msg/CompressedImage": "std_msgs/Header header\nstring format\nuint8[] data"
    + _SEP
    + _HEADER
    + _SEP
    + _TIME,
    "geometry_msgs/msg/PoseStamped": "std_msgs/Header header\ngeometry_msgs/Pose pose"
    + _SEP
    + _HEADER
    + _SEP
    + _TIME
    + _SEP
    + "MSG: geometry_msgs/Pose\nPoint position\nQuaternion orientation"
    + _SEP
    + "MSG: geometry_msgs/Point\nfloat64 x\nfloat64 y\nfloat64 z"
    + _SEP
    + "MSG: geometry_msgs/Quaternion\nfloat64 x 0\nfloat64 y 0\nfloat64 z 0\nfloat64 w 1",
    "std_msgs/msg/String": "string data",
}


def stamp(t: float) -> dict:
    sec = int(np.floor(t))
    return {"sec": sec, "nanosec": round((t - sec) * 1e9)}


class Bag:
    """A ROS 2 MCAP writer that remembers where each message ended in the file."""

    def __init__(self, path: Path, chunk_size: int = 1 << 20) -> None:
        from mcap_ros2.writer import Writer

        self.f = open(path, "wb")  # noqa: SIM115  (closed in finish)
        self.w = Writer(self.f, chunk_size=chunk_size)
        self.schemas = {k: self.w.register_msgdef(k, v) for k, v in MSGDEFS.items()}
        self.ends: list[tuple[str, float, int]] = []

    def write(self, topic: str, kind: str, msg: dict, log: float) -> None:
        self.w.write_message(topic, self.schemas[kind], msg, log_time=round(log * 1e9))
        self.f.flush()
        self.ends.append((topic, log, self.f.tell()))

    def joints(self, topic: str, t: float, pos, log: float | None = None, names=None) -> None:
        pos = [float(x) for x in pos]
        names = names or [f"j{i}" for i in range(len(pos))]
        msg = {"header": {"stamp": stamp(t), "frame_id": ""}, "name": names, "position": pos,
               "velocity": [], "effort": []}  # fmt: skip
        self.write(topic, "sensor_msgs/msg/JointState", msg, t if log is None else log)

    def image(self, topic: str, t: float, rgb: np.ndarray, log: float | None = None) -> None:
        msg = {"header": {"stamp": stamp(t), "frame_id": "cam"}, "height": rgb.shape[0],
               "width": rgb.shape[1], "encoding": "rgb8", "is_bigendian": 0,
               "step": rgb.shape[1] * 3, "data": rgb.tobytes()}  # fmt: skip
        self.write(topic, "sensor_msgs/msg/Image", msg, t if log is None else log)

    def jpeg(self, topic: str, t: float, rgb: np.ndarray) -> None:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert ok
        msg = {
            "header": {"stamp": stamp(t), "frame_id": "cam"},
            "format": "jpeg",
            "data": buf.tobytes(),
        }
        self.write(topic, "sensor_msgs/msg/CompressedImage", msg, t)

    def pose(self, topic: str, t: float, xyz) -> None:
        msg = {"header": {"stamp": stamp(t), "frame_id": "base"}, "pose": {
            "position": dict(zip("xyz", map(float, xyz), strict=True)),
            "orientation": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}}}  # fmt: skip
        self.write(topic, "geometry_msgs/msg/PoseStamped", msg, t)

    def marker(self, topic: str, t: float, text: str) -> None:
        self.write(topic, "std_msgs/msg/String", {"data": text}, t)

    def finish(self) -> None:
        self.w.finish()
        self.f.close()

    def abandon(self) -> None:
        """What a crashed recorder leaves: no footer, no summary."""
        self.f.close()


MAPPING_TOML = """
control_hz = 10.0
task = "pick"
robot = "ur5e-01"
operator = "alice"
instruction = "pick up the cube"

[obs.joint_pos]
topic = "/joint_states"
field = "position"
joints = ["j0", "j1", "j2"]

[obs.ee_pose]
topic = "/ee_pose"

[images.front]
topic = "/cam/front"

[images.wrist]
topic = "/cam/wrist/compressed"

[action]
topic = "/arm/command"

[episodes]
topic = "/episode"
"""


def ros_bag(
    path: Path,
    *,
    t0: float = 1000.0,
    episodes=((0.5, 2.5, "end success"), (3.0, 5.0, "end failure")),
    drop_front: set[int] = frozenset(),
    finish: bool = True,
    chunk_size: int = 1 << 20,
) -> Bag:
    """Joints at 50 Hz, pose at 20 Hz, raw camera at 10 Hz, JPEG camera at 5 Hz, action at 10 Hz,
    episode markers; camera frame k is dropped when k is in `drop_front`."""
    bag = Bag(path, chunk_size=chunk_size)
    end = max(e[1] for e in episodes) + 0.5
    events = []
    for k in range(int(end * 50) + 1):
        events.append((k / 50, "joints", k))
    for k in range(int(end * 20) + 1):
        events.append((k / 20 + 0.001, "pose", k))
    for k in range(int(end * 10) + 1):
        if k not in drop_front:
            events.append((k / 10 + 0.002, "front", k))
        events.append((k / 10 + 0.003, "action", k))
    for k in range(int(end * 5) + 1):
        events.append((k / 5 + 0.004, "wrist", k))
    for s, e, text in episodes:
        events.append((s - 0.0005, "marker", "start"))
        events.append((e + 0.0005, "marker", text))
    for t, kind, k in sorted(events, key=lambda x: x[0]):
        tt = t0 + t
        if kind == "joints":
            bag.joints("/joint_states", tt, [k, 2 * k, 3 * k, 99.0], names=["j0", "j1", "j2", "j3"])
        elif kind == "pose":
            bag.pose("/ee_pose", tt, [k, 0.0, 1.0])
        elif kind == "front":
            bag.image("/cam/front", tt, frames(1, start=k)[0])
        elif kind == "wrist":
            bag.jpeg("/cam/wrist/compressed", tt, frames(1, start=k)[0])
        elif kind == "action":
            bag.joints("/arm/command", tt, [k, -k])
        else:
            bag.marker("/episode", tt, k)
    if finish:
        bag.finish()
    else:
        bag.abandon()
    return bag


# --- HDF5 ---------------------------------------------------------------------------------


def robomimic(
    path: Path, lengths: list[int], *, image: bool = True, nan_in: int | None = None
) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps(
            {"env_name": "Lift", "env_kwargs": {"control_freq": 20, "robots": ["Panda"]}}
        )
        for i, n in enumerate(lengths):
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = n
            pos = np.arange((n + 1) * 3, dtype=np.float64).reshape(n + 1, 3) + 1000 * i
            if nan_in == i:
                pos[n // 2, 1] = np.nan
            g["obs/robot0_eef_pos"] = pos[:-1]
            g["next_obs/robot0_eef_pos"] = pos[1:]
            if image:
                fr = frames(n + 1, start=i * 5)
                g["obs/agentview_image"] = fr[:-1]
                g["next_obs/agentview_image"] = fr[1:]
            g["actions"] = np.full((n, 7), i, dtype=np.float64) + np.arange(n)[:, None]
            g["rewards"] = np.eye(1, n, n - 1)[0]
            g["dones"] = np.eye(1, n, n - 1, dtype=np.int64)[0]
            g["states"] = np.zeros((n, 10))
    return path


def droid(
    folder: Path,
    n: int = 12,
    *,
    cams: tuple[str, ...] = ("12345",),
    late: dict[int, float] | None = None,
) -> Path:
    """A DROID-style folder: trajectory.h5 (ms timestamps), recordings/MP4/<serial>.mp4, metadata."""
    import h5py

    folder.mkdir(parents=True)
    step = 1000 / 15  # 15 Hz, in ms
    with h5py.File(folder / "trajectory.h5", "w") as f:
        f["observation/robot_state/joint_positions"] = np.arange(n * 7, dtype=np.float64).reshape(
            n, 7
        )
        f["observation/robot_state/gripper_position"] = np.linspace(0, 1, n)
        f["observation/timestamp/control/step_start"] = (1.7e12 + np.arange(n) * step).astype(
            np.int64
        )
        f["observation/controller_info/success"] = np.eye(1, n, n - 1, dtype=bool)[0]
        f["action/cartesian_position"] = np.ones((n, 6)) * np.arange(n)[:, None]
        f["action/gripper_position"] = np.linspace(0, 1, n)
        f["action/joint_velocity"] = np.zeros((n, 7))
        for c in cams:
            cap = 1.7e12 + np.arange(n) * step - 5
            for k, d in (late or {}).items():
                cap[k] += d
            f[f"observation/timestamp/cameras/{c}_estimated_capture"] = cap.astype(np.int64)
    for c in cams:
        write_mp4(folder / "recordings" / "MP4" / f"{c}.mp4", frames(n), 15)
    (folder / "metadata_abc.json").write_text(
        json.dumps(
            {"user": "Bob Smith", "current_task": "put the marker in the cup", "success": True}
        )
    )
    return folder


# --- plain directory ----------------------------------------------------------------------


def dir_episode(
    folder: Path,
    *,
    n: int = 30,
    hz: float = 10.0,
    video: bool = True,
    meta: dict | None = None,
    arrays: dict | None = None,
    video_drop: set[int] = frozenset(),
) -> Path:
    """A plain-directory episode: lowdim at `hz` with a 2x-rate array, camera at `hz`."""
    folder.mkdir(parents=True)
    t = 50.0 + np.arange(n) / hz
    fast_t = 50.0 + np.arange(2 * n - 1) / (2 * hz)
    z = {
        "timestamp": t,
        "action": np.stack([np.arange(n), -np.arange(n)], 1).astype(np.float32),
        "joint_pos": np.stack([np.arange(n)] * 3, 1).astype(np.float32),
        "force": np.arange(2 * n - 1, dtype=np.float32)[:, None],
        "force.timestamp": fast_t,
    }
    z.update(arrays or {})
    np.savez(folder / "lowdim.npz", **z)
    (folder / "episode.json").write_text(
        json.dumps({"control_hz": hz, "task": "wipe", "robot": "arm7", "operator": "carol",
                    "success": True, "instruction": "wipe the table", "station": 3} | (meta or {}))
    )  # fmt: skip
    if video:
        keep = [i for i in range(n) if i not in video_drop]
        write_mp4(folder / "front.mp4", frames(n)[keep], hz)
        np.save(folder / "front.timestamps.npy", t[keep] + 0.0005)
    return folder
