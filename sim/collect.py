"""Roll out a policy in simulation and commit every episode to the corpus.

Episode i of a run gets seed `seed + i` for both the env (layout, randomisation) and the
policy's own noise, so a run's episodes do not depend on how many workers or envs per worker
produced them, and re-running a collection commits nothing new (the corpus dedupes by content).

Workers are separate processes (spawn context: MuJoCo and GL contexts do not survive fork),
each with a SimVectorEnv of `envs_per_worker` envs and one batched policy call per step, each
appending finished episodes through `Corpus.append` (atomic, safe from many processes).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sim.env import STATE_SPEC, FlywheelEnv
from sim.experts import DEFAULT_NOISE, BatchExpert, make_expert
from sim.robot import ROBOT_NAME
from sim.tasks import TASKS
from sim.variation import VARIATIONS, Variation
from sim.vector import SimVectorEnv


class BatchPolicy(Protocol):
    """What collection drives: one call per step for a batch of envs."""

    def reset(self, index: int, seed: int | None = None) -> None:
        """A new episode starts in slot `index`."""

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Batched obs (dict of (N, ...) arrays) -> actions (N, 4) in [-1, 1]."""


PolicyFactory = Callable[..., BatchPolicy]
"""factory(task=str, num_envs=int, noise=float, seed=int) -> BatchPolicy. The returned object
may carry a `version` attribute (str), recorded as the episodes' policy_version."""


def _expert_factory(*, task: str, num_envs: int, noise: float, seed: int) -> BatchPolicy:
    return BatchExpert([make_expert(task, noise, seed=seed + i) for i in range(num_envs)])


POLICY_LOADERS: dict[str, PolicyFactory] = {"expert": _expert_factory}
"""Policy name -> factory. The learning code registers trained policy bundles here."""


def collect(
    task: str,
    episodes: int,
    policy: str = "expert",
    noise: float = DEFAULT_NOISE,
    seed: int = 0,
    cameras: tuple[str, ...] | list[str] = (),
    workers: int = 1,
    corpus_path: str | Path | None = None,
    *,
    image_size: int = 84,
    variation: str | Variation = "none",
    envs_per_worker: int = 4,
    progress: Callable[[int, bool], None] | None = None,
) -> dict[str, Any]:
    """Collect `episodes` episodes of `task` with `policy` into the corpus at `corpus_path`.

    `progress(done, success)` is called once per committed episode (in this process).
    Returns a summary: episodes, successes, success_rate, env_steps, seconds, episode_ids,
    duplicates, and the run's settings.
    """
    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}; known: {sorted(TASKS)}")
    if policy not in POLICY_LOADERS:
        raise KeyError(
            f"unknown policy {policy!r}; known: {sorted(POLICY_LOADERS)} "
            "(register a loader in sim.collect.POLICY_LOADERS)"
        )
    if isinstance(variation, str) and variation not in VARIATIONS:
        raise KeyError(f"unknown variation {variation!r}; known: {sorted(VARIATIONS)}")
    if episodes < 1 or workers < 1:
        raise ValueError("episodes and workers must be >= 1")
    if corpus_path is None:
        raise ValueError("corpus_path is required")
    job = {
        "task": task,
        "policy": policy,
        "noise": float(noise),
        "cameras": tuple(cameras),
        "corpus_path": str(corpus_path),
        "image_size": int(image_size),
        "variation": variation,
        "envs_per_worker": int(envs_per_worker),
    }
    workers = min(workers, episodes)
    plan = [[seed + i for i in range(w, episodes, workers)] for w in range(workers)]
    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    done = 0

    def on_episode(record: dict[str, Any]) -> None:
        nonlocal done
        results.append(record)
        done += 1
        if progress is not None:
            progress(done, record["success"])

    if workers == 1:  # in-process: no spawn start-up cost
        _run_worker(job, plan[0], on_episode)
    else:
        _run_pool(job, plan, on_episode)
    seconds = time.perf_counter() - start
    results.sort(key=lambda r: r["seed"])
    successes = sum(r["success"] for r in results)
    steps = sum(r["steps"] for r in results)
    return {
        "task": task,
        "policy": policy,
        "noise": float(noise),
        "seed": seed,
        "workers": workers,
        "cameras": list(cameras),
        "corpus": str(corpus_path),
        "episodes": len(results),
        "successes": successes,
        "success_rate": successes / max(1, len(results)),
        "env_steps": steps,
        "seconds": seconds,
        "env_steps_per_s": steps / seconds if seconds > 0 else 0.0,
        "duplicates": sum(r["duplicate"] for r in results),
        "episode_ids": [r["episode_id"] for r in results],
    }


def _run_pool(
    job: dict[str, Any], plan: list[list[int]], on_episode: Callable[[dict], None]
) -> None:
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    procs = [ctx.Process(target=_worker_main, args=(job, seeds, events)) for seeds in plan]
    for p in procs:
        p.start()
    finished = 0
    try:
        while finished < len(procs):
            try:
                kind, payload = events.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
                if dead:
                    code = dead[0].exitcode
                    raise RuntimeError(f"collection worker died (exit code {code})") from None
                continue
            if kind == "episode":
                on_episode(payload)
            elif kind == "done":
                finished += 1
            else:
                raise RuntimeError(f"collection worker failed:\n{payload}")
    finally:
        for p in procs:
            p.join(timeout=5.0)
            if p.is_alive():
                p.terminate()


def _worker_main(job: dict[str, Any], seeds: list[int], events: Any) -> None:
    """Entry point of a spawned worker: report every episode, then "done" (or the error)."""
    try:
        _run_worker(job, seeds, lambda record: events.put(("episode", record)))
        events.put(("done", None))
    except BaseException:
        events.put(("error", traceback.format_exc()))


def _run_worker(
    job: dict[str, Any], seeds: list[int], report: Callable[[dict[str, Any]], None]
) -> None:
    """Run the episodes `seeds` through a vector env and append each one as it finishes."""
    from flywheel.corpus import Corpus  # only collection needs the corpus

    corpus = Corpus.open_or_create(job["corpus_path"])
    n = max(1, min(job["envs_per_worker"], len(seeds)))
    venv = SimVectorEnv(
        job["task"],
        n,
        autoreset=False,
        cameras=job["cameras"],
        image_size=job["image_size"],
        variation=job["variation"],
    )
    factory = POLICY_LOADERS[job["policy"]]
    policy = factory(task=job["task"], num_envs=n, noise=job["noise"], seed=seeds[0])
    if not hasattr(policy, "reset"):
        policy = _Stateless(policy)
    version = str(getattr(policy, "version", job["policy"]))
    pending = list(reversed(seeds))
    recorders: list[_Recorder | None] = [None] * n

    def start(i: int) -> None:
        if not pending:
            recorders[i] = None
            return
        s = pending.pop()
        obs, info = venv.reset_one(i, seed=s)
        policy.reset(i, s)
        recorders[i] = _Recorder(venv.envs[i], s, obs, info)

    for i in range(n):
        start(i)
    try:
        obs = venv.observations()
        while any(r is not None for r in recorders):
            actions = np.asarray(policy(obs), np.float32).reshape(n, -1)
            for i, rec in enumerate(recorders):
                if rec is None:
                    continue
                o, r, term, trunc, info = venv.step_one(i, actions[i])
                rec.add(actions[i], o, r, term, trunc, info)
                if term or trunc:
                    ep = rec.episode(job, version)
                    result = corpus.append(ep)
                    report(
                        {
                            "seed": rec.seed,
                            "success": bool(ep.meta.success),
                            "steps": ep.length,
                            "episode_id": result.episode_id,
                            "duplicate": result.duplicate,
                        }
                    )
                    start(i)
            obs = venv.observations()
    finally:
        venv.close()


class _Stateless:
    """Adapts a plain callable (obs -> actions) to the BatchPolicy protocol."""

    def __init__(self, fn: Callable[[dict[str, np.ndarray]], np.ndarray]) -> None:
        self.fn = fn
        self.version = getattr(fn, "version", None)

    def reset(self, index: int, seed: int | None = None) -> None:
        pass

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self.fn(obs)


class _Recorder:
    """Accumulates one episode's arrays from one env."""

    def __init__(self, env: FlywheelEnv, seed: int, obs: dict, info: dict) -> None:
        self.env = env
        self.seed = seed
        self.randomisation = info["randomisation"]
        self.obs: list[dict[str, np.ndarray]] = [obs]
        self.states = [env.get_state()]
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.terms: list[bool] = []
        self.truncs: list[bool] = []
        self.term_sums: dict[str, float] = {}
        self.success = False

    def add(self, action, obs, reward, terminated, truncated, info) -> None:
        self.actions.append(np.asarray(action, np.float32))
        self.obs.append(obs)
        self.states.append(self.env.get_state())
        self.rewards.append(float(reward))
        self.terms.append(bool(terminated))
        self.truncs.append(bool(truncated))
        self.success = self.success or bool(info["success"])
        for k, v in info["reward_terms"].items():
            self.term_sums[k] = self.term_sums.get(k, 0.0) + float(v)

    def episode(self, job: dict[str, Any], version: str):
        from flywheel.corpus import Episode, EpisodeMeta

        env = self.env
        cams = set(env.cameras)
        keys = self.obs[0].keys()
        steps = len(self.actions)
        variation = job["variation"]
        meta = EpisodeMeta(
            source="sim",
            task=job["task"],
            robot=ROBOT_NAME,
            control_hz=float(env.config.control.control_hz),
            success=self.success,
            policy_version=version,
            operator=None,
            info={
                "seed": self.seed,
                "noise": job["noise"],
                "policy": job["policy"],
                "variation": variation if isinstance(variation, str) else "custom",
                "randomisation": self.randomisation,
                "reward_terms": self.term_sums,
                "image_size": job["image_size"] if cams else None,
                "physics_dt": float(env.model.opt.timestep),
                "state_spec": STATE_SPEC,  # mj_getState signature of the extras state
            },
        )
        return Episode(
            obs={k: np.stack([o[k] for o in self.obs]) for k in keys if k not in cams},
            images={k: np.stack([o[k] for o in self.obs]) for k in keys if k in cams},
            action=np.stack(self.actions),
            reward=np.asarray(self.rewards, np.float32),
            terminated=np.asarray(self.terms, bool),
            truncated=np.asarray(self.truncs, bool),
            timestamp=np.arange(steps + 1, dtype=np.float64) / env.config.control.control_hz,
            extras={state_key(job["task"]): np.stack(self.states)},
            meta=meta,
        )


def state_key(task: str) -> str:
    """Extras key of the per-step MuJoCo state. Per task, because the corpus fixes a key's
    shape and each task's model has its own state size."""
    return f"mj_state_{task}"
