"""Online refinement loops: PPO (on-policy) and RLPD-style SAC (off-policy + corpus).

Both start from an offline bundle, spend an env-step budget, append every finished episode to
the corpus as source `online` (so the next retrain sees them), and save a new bundle whose
lineage names its parent. The normaliser is the bundle's, frozen.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from flywheel.algorithms.base import MixedSource, OfflineSource, ReplaySource, to_torch
from flywheel.algorithms.ppo import PPO, PPOConfig, gae
from flywheel.algorithms.sac import SAC, SACConfig
from flywheel.corpus import Corpus, Filter, TrainingCache
from flywheel.evaluation import evaluate
from flywheel.policies import Bundle, NumpyPolicy, ValueNet, save_bundle
from flywheel.rollout import EnvPool, EpisodeRecord
from flywheel.workers import ProcessEnvPool, make_pool

Progress = Callable[[int, int], None]

WORKERS_FROM = 20_000
"""Env-step budget from which `env_workers=None` steps envs in worker processes."""


@dataclass(frozen=True, kw_only=True)
class RefineConfig:
    """One online refinement run."""

    algo: Literal["ppo", "sac"] = "ppo"
    """`ppo` fine-tunes the offline actor and value; `sac` learns with corpus data mixed in."""
    env_steps: int = 20_000
    """Env-step budget."""
    eval_episodes: int = 20
    """Episodes for the before/after success measurement (paired seeds)."""
    eval_seed: int = 2_000_000
    """First seed of the before/after evaluation."""
    seed: int = 0
    """Seed of rollouts and updates."""
    robot: str = "sim"
    """Robot name recorded on online episodes."""
    check_every: int = 5
    """Rollouts between checks of the current policy (the best one checked is returned)."""
    check_episodes: int = 20
    """Episodes per check (seeds apart from the before/after evaluation)."""
    env_workers: int | None = None
    """Processes the envs step in (0: in this process). None: one per CPU core for budgets of
    at least `WORKERS_FROM` steps (starting workers costs ~2 s, worth it only for long runs)."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    sac: SACConfig = field(default_factory=SACConfig)


def env_workers(config: RefineConfig, num_envs: int) -> int:
    """How many processes step the envs (see `RefineConfig.env_workers`)."""
    if config.env_workers is not None:
        return config.env_workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(cores or 1, num_envs) if config.env_steps >= WORKERS_FROM and (cores or 1) > 1 else 0


class EpisodeSink:
    """Appends finished online episodes to the corpus (or drops them when there is none)."""

    def __init__(self, corpus: Corpus | None, *, task: str, robot: str, control_hz: float, version: str) -> None:  # fmt: skip
        self.corpus, self.task, self.robot, self.hz, self.version = (
            corpus,
            task,
            robot,
            control_hz,
            version,
        )
        self.episodes = self.successes = 0

    def __call__(self, records: list[EpisodeRecord]) -> None:
        for rec in records:
            self.episodes += 1
            self.successes += int(rec.success)
            if self.corpus is not None:
                ep = rec.to_episode(task=self.task, robot=self.robot, control_hz=self.hz, source="online", policy_version=self.version)  # fmt: skip
                self.corpus.append(ep)


def refine(
    bundle: Bundle,
    env_fn: Callable[[], gym.Env],
    config: RefineConfig,
    *,
    out: Path,
    corpus: Corpus | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Refine `bundle` online; save the result at `out`; return before/after figures."""
    torch.set_num_threads(1)
    torch.manual_seed(config.seed)
    task = bundle.schema["task"]
    before = evaluate(
        NumpyPolicy(bundle.actor), env_fn, episodes=config.eval_episodes, seed=config.eval_seed
    )
    version = f"online:{bundle.path.name}"
    sink = EpisodeSink(
        corpus,
        task=task,
        robot=config.robot,
        control_hz=bundle.schema["control_hz"],
        version=version,
    )
    t0 = time.perf_counter()
    if config.algo == "ppo":
        actor, value, metrics = _ppo(bundle, env_fn, config, sink, progress)
    else:
        actor, value, metrics = _sac(bundle, env_fn, config, sink, corpus, progress)
    seconds = time.perf_counter() - t0
    after = evaluate(
        NumpyPolicy(actor), env_fn, episodes=config.eval_episodes, seed=config.eval_seed
    )
    lineage = {
        "algorithm": config.algo,
        "parent": str(bundle.path),
        "parent_hash": bundle.content_hash,
        "snapshot": bundle.lineage.get("snapshot"),
        "config": asdict(config),
        "seed": config.seed,
        "env_steps": config.env_steps,
        "metrics": metrics,
        "success_before": before.to_json(),
        "success_after": after.to_json(),
    }
    save_bundle(
        out, actor, task=task, control_hz=bundle.schema["control_hz"], lineage=lineage, value=value
    )
    return {
        "bundle": str(out),
        "success_before": before.success_rate,
        "success_after": after.success_rate,
        "env_steps": config.env_steps,
        "online_episodes": sink.episodes,
        "online_success_rate": sink.successes / max(1, sink.episodes),
        "seconds": seconds,
        "env_steps_per_s": config.env_steps / seconds,
        "metrics": metrics,
    }


def _ppo(bundle: Bundle, env_fn: Callable[[], gym.Env], config: RefineConfig, sink: EpisodeSink, progress: Progress | None) -> tuple[Any, ValueNet, dict]:  # fmt: skip
    cfg = config.ppo
    actor = copy.deepcopy(bundle.actor).train()
    if not actor.spec.squash:
        with torch.no_grad():
            actor.log_std.clamp_(max=float(np.log(cfg.max_init_std)))
    if bundle.value is not None:
        value = copy.deepcopy(bundle.value).train()
    else:
        value = ValueNet(actor.spec, actor.encoder.normalizer)
    algo = PPO(actor, value, cfg)
    pool = make_pool(
        [env_fn] * cfg.num_envs,
        workers=env_workers(config, cfg.num_envs),
        seed=config.seed * 1_000_003,
        record=sink.corpus is not None,
    )
    steps, last = 0, {}
    g = torch.Generator().manual_seed(config.seed)
    keeper = _BestKeeper(env_fn, config, actor, value)
    try:
        while steps < config.env_steps:
            roll = _collect(pool, actor, value, cfg.rollout_steps, g, sink)
            steps += cfg.rollout_steps * cfg.num_envs
            adv, ret = gae(
                roll["reward"],
                roll["value"],
                roll["next_value"],
                roll["done"],
                cfg.gamma,
                cfg.gae_lambda,
            )
            flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731  (T, N, ...) -> (T*N, ...)
            data = {
                "obs": {k: flat(v) for k, v in roll["obs"].items()},
                "action": flat(roll["action"]),
                "logp": flat(roll["logp"]),
                "adv": flat(adv),
                "ret": flat(ret),
                "v_old": flat(roll["value"]),
            }
            n = data["action"].shape[0]
            for _ in range(cfg.epochs):
                perm = torch.randperm(n, generator=g)
                for i in range(0, n, cfg.minibatch):
                    j = perm[i : i + cfg.minibatch]
                    mb = {
                        k: ({kk: vv[j] for kk, vv in v.items()} if isinstance(v, dict) else v[j])
                        for k, v in data.items()
                    }
                    last = algo.update(mb)
            algo.rollouts += 1
            if algo.rollouts % config.check_every == 0 or steps >= config.env_steps:
                keeper.check(actor, value, steps)
            if progress is not None:
                progress(min(steps, config.env_steps), config.env_steps)
    finally:
        pool.close()
    actor, value = keeper.best(actor, value)
    return (
        actor.eval(),
        value.eval(),
        {"ppo": last, "rollouts": algo.rollouts, "checks": keeper.log},
    )


class _BestKeeper:
    """Online RL can collapse a good policy; keep the best one seen on held-out seeds.

    Every `check_every` rollouts the current policy is evaluated (deterministic, its own seeds,
    apart from the before/after evaluation) and kept if it beats the best so far, the starting
    policy included: refinement never returns a policy it measured to be worse.
    """

    def __init__(self, env_fn: Callable[[], gym.Env], config: RefineConfig, actor: Any, value: ValueNet) -> None:  # fmt: skip
        self.env_fn, self.config = env_fn, config
        self.log: list[dict[str, float]] = []
        self.score = self._score(actor)
        self.state = (copy.deepcopy(actor.state_dict()), copy.deepcopy(value.state_dict()))
        self.log.append({"env_steps": 0, "success": self.score[0], "return": self.score[1]})

    def _score(self, actor: Any) -> tuple[float, float]:
        r = evaluate(NumpyPolicy(actor), self.env_fn, episodes=self.config.check_episodes, seed=self.config.eval_seed + 10_000)  # fmt: skip
        actor.train()
        return r.success_rate, r.mean_return

    def check(self, actor: Any, value: ValueNet, steps: int) -> None:
        score = self._score(actor)
        self.log.append({"env_steps": steps, "success": score[0], "return": score[1]})
        if score > self.score:
            self.score = score
            self.state = (copy.deepcopy(actor.state_dict()), copy.deepcopy(value.state_dict()))

    def best(self, actor: Any, value: ValueNet) -> tuple[Any, ValueNet]:
        actor.load_state_dict(self.state[0])
        value.load_state_dict(self.state[1])
        return actor, value


@torch.no_grad()
def _collect(pool: EnvPool | ProcessEnvPool, actor: Any, value: ValueNet, T: int, g: torch.Generator, sink: EpisodeSink) -> dict[str, Any]:  # fmt: skip
    """A (T, N) on-policy rollout with values for GAE (truncations bootstrap from V(final))."""
    obs_l, act_l, logp_l, val_l, rew_l, done_l, nv_l = [], [], [], [], [], [], []
    obs = to_torch(pool.batch())
    v = value(obs)
    for _ in range(T):
        d = actor.dist(obs)
        a = d.sample(g)
        next_obs, r, term, _trunc, final, finished = pool.step(a.clamp(-1, 1).numpy())
        sink(finished)
        nxt = to_torch(next_obs)
        v_next = value(nxt)  # V of the next step's observation: reused as that step's V
        nv = v_next.clone()
        if final:  # finished envs: bootstrap from the true last state, not the reset one
            idx = sorted(final)
            fo = to_torch({k: np.stack([final[i][k] for i in idx]) for k in final[idx[0]]})
            nv[idx] = value(fo)
        obs_l.append(obs)
        act_l.append(a)
        logp_l.append(d.log_prob(a))
        val_l.append(v)
        rew_l.append(torch.as_tensor(r))
        done_l.append(torch.as_tensor(term, dtype=torch.float32))
        nv_l.append(nv)
        obs, v = nxt, v_next
    return {
        "obs": {k: torch.stack([o[k] for o in obs_l]) for k in obs_l[0]},
        "action": torch.stack(act_l),
        "logp": torch.stack(logp_l),
        "value": torch.stack(val_l),
        "reward": torch.stack(rew_l),
        "done": torch.stack(done_l),
        "next_value": torch.stack(nv_l),
    }


def _sac(bundle: Bundle, env_fn: Callable[[], gym.Env], config: RefineConfig, sink: EpisodeSink, corpus: Corpus | None, progress: Progress | None) -> tuple[Any, None, dict]:  # fmt: skip
    cfg = config.sac
    norm = bundle.actor.encoder.normalizer
    algo = SAC(bundle.spec, norm, cfg)
    replay = ReplaySource(capacity=max(config.env_steps, 1000), seed=config.seed)
    source: Any = replay
    if corpus is not None:
        snap = corpus.snapshot(Filter(task=bundle.schema["task"]))
        if snap.entries:
            cache = TrainingCache.build(corpus, snap, obs_keys=list(bundle.spec.obs_shapes))
            source = MixedSource(OfflineSource(cache, seed=config.seed), replay)
    pool = make_pool(
        [env_fn] * cfg.num_envs,
        workers=env_workers(config, cfg.num_envs),
        seed=config.seed * 1_000_003,
        record=sink.corpus is not None,
    )
    steps, last = 0, {}
    try:
        obs = pool.batch()
        while steps < config.env_steps:
            with torch.no_grad():
                a, _ = algo.actor.sample(to_torch(obs))
            act = a.numpy()
            next_obs, r, term, _trunc, final, finished = pool.step(act)
            sink(finished)
            true_next = {k: v.copy() for k, v in next_obs.items()}
            for i, fo in final.items():
                for k in true_next:
                    true_next[k][i] = fo[k]
            replay.add(obs, act, r, true_next, term.astype(np.float32))
            obs = next_obs
            steps += pool.n
            if steps >= cfg.warmup_steps:
                for _ in range(cfg.updates_per_step):
                    last = algo.update(source.sample(cfg.batch_size))
            if progress is not None:
                progress(min(steps, config.env_steps), config.env_steps)
    finally:
        pool.close()
    return algo.actor.eval(), None, {"sac": last}
