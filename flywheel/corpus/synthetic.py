"""Synthetic episodes with the shape of real ones, for tests, benchmarks and the first demo.

A point moves towards a goal under a noisy proportional controller; cameras show a dot on a
gradient, so JPEG behaves as on real frames (smooth regions, an edge) rather than on noise.
"""

from __future__ import annotations

import numpy as np

from flywheel.corpus.episode import Episode, EpisodeMeta


def synthetic_episode(
    seed: int,
    *,
    length: int = 50,
    cameras: tuple[str, ...] = (),
    image_size: int = 64,
    task: str = "reach",
    source: str = "sim",
    control_hz: float = 20.0,
) -> Episode:
    """A reproducible episode: the same seed gives the same arrays (so the same content hash)."""
    rng = np.random.default_rng(seed)
    T = length
    goal = rng.uniform(-0.15, 0.15, size=3)
    pos = np.zeros((T + 1, 3))
    pos[0] = rng.uniform(-0.05, 0.05, size=3)
    action = np.zeros((T, 4), dtype=np.float32)
    for t in range(T):
        a = np.clip(5.0 * (goal - pos[t]) + rng.normal(0, 0.1, 3), -1, 1)
        action[t, :3] = a
        action[t, 3] = 1.0 if t > T // 2 else -1.0
        pos[t + 1] = pos[t] + 0.02 * a
    dist = np.linalg.norm(pos - goal, axis=1)
    success = bool(dist[-1] < 0.05)
    terminated = np.zeros(T, dtype=bool)
    terminated[-1] = success
    joint = np.concatenate([pos, np.sin(pos * 3), np.cos(pos[:, :1])], axis=1).astype(np.float32)
    images = {c: _frames(pos, image_size, k) for k, c in enumerate(cameras)}
    return Episode(
        obs={
            "joint_pos": joint,  # (T+1, 7)
            "ee_pos": pos.astype(np.float32),  # (T+1, 3)
            "goal": np.repeat(goal[None].astype(np.float32), T + 1, axis=0),  # (T+1, 3)
        },
        images=images,
        action=action,
        reward=(-dist[1:]).astype(np.float32),
        terminated=terminated,
        truncated=np.eye(1, T, T - 1, dtype=bool)[0] & ~terminated,
        timestamp=np.arange(T + 1) / control_hz,
        extras={"sim_state": np.concatenate([pos, pos], axis=1)},
        meta=EpisodeMeta(
            source=source,  # type: ignore[arg-type]
            task=task,
            robot="synthetic-point",
            control_hz=control_hz,
            success=success,
            policy_version="synthetic",
            info={"seed": seed},
        ),
    )


def _frames(pos: np.ndarray, size: int, cam: int) -> np.ndarray:
    """(T+1, size, size, 3) uint8: a gradient background with a bright dot at the position."""
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 255 // size, yy * 255 // size, np.full_like(xx, 60 + 40 * cam)], -1)
    out = np.repeat(base[None].astype(np.uint8), len(pos), axis=0)
    c = ((pos[:, :2] + 0.25) / 0.5 * size).astype(int).clip(3, size - 4)
    for t, (x, y) in enumerate(c):
        out[t, y - 3 : y + 3, x - 3 : x + 3] = (255, 255, 255)
    return out
