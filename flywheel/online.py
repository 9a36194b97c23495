"""Online refinement loops: PPO (on-policy) and RLPD-style SAC (off-policy + corpus).

Both start from an offline bundle, spend an env-step budget, append every finished episode to
the corpus as source `online` (so the next retrain sees them), and save a new bundle whose
lineage names its parent. The normaliser is the bundle's, frozen.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from flywheel.algorithms.base import (
    MixedSource,
    OfflineSource,
    ReplaySource,
    absorbing_reward,
    to_torch,
)
from flywheel.algorithms.ppo import PPO, PPOConfig, gae
from flywheel.algorithms.sac import SAC, SACConfig
from flywheel.checkpoints import load_checkpoint, save_checkpoint
from flywheel.corpus import Corpus, Filter, TrainingCache
from flywheel.evaluation import evaluate
from flywheel.policies import Bundle, GaussianActor, NumpyPolicy, ValueNet, save_bundle
from flywheel.policies.numpy_forward import Behaviour, NumpyActor
from flywheel.rollout import EnvPool, EpisodeRecord
from flywheel.runtime import Runtime
from flywheel.workers import ProcessEnvPool, make_pool

Progress = Callable[[int, int], None]

REFINE_ALGOS = ("ppo", "sac")
"""The online learners `RefineConfig.algo` names."""


def check_refine_algo(algo: str) -> None:
    """ValueError unless `algo` names an online learner (also used before Prefect starts)."""
    if algo not in REFINE_ALGOS:
        raise ValueError(f"refinement algo must be one of {', '.join(REFINE_ALGOS)}, not {algo!r}")  # fmt: skip


WORKERS_FROM = 20_000
"""Env-step budget from which `env_workers=None` steps envs in worker processes."""


@dataclass(frozen=True, kw_only=True)
class RefineConfig:
    """One online refinement run."""

    algo: Literal["ppo", "sac"] = "sac"
    """`sac` learns with corpus data in every batch (RLPD): the one that improves policies here
    (docs/learning.md); `ppo` fine-tunes the offline actor and value, ~6x faster per step."""
    env_steps: int = 40_000
    """Env-step budget. SAC's actor starts fresh and takes about 20k lift steps to match the
    offline policy; the gains come after that (`RoundConfig.online_steps`)."""
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
    finalists: int = 3
    """Best-checked policies kept for the end, where `confirm_episodes` fresh seeds choose
    among them (near the ceiling, 20-episode checks rank the late policies by noise)."""
    confirm_episodes: int = 50
    """Episodes of the final scoring of the finalists, and of the paired comparison of the
    winner with the starting policy (fresh seeds: the maximum of many noisy checks over-states
    the winner)."""
    checkpoint_every: int = 5
    """Rollouts (PPO) or 5,000-step blocks (SAC) between checkpoints; a killed run started again
    with the same arguments resumes from the last one."""
    env_workers: int | None = None
    """Worker processes that step a share of the envs beside this process (0: all envs here).
    None: one per extra CPU core for budgets of at least `WORKERS_FROM` steps (a worker takes
    ~0.6 s of a core to start, overlapped with scoring the start on a fresh run; shorter runs
    are dominated by their evaluations, which step in this process)."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    runtime: Runtime = field(default_factory=Runtime)
    """Online runs stay on CPU whatever `device` says: their batches are a few envs wide, and a
    GPU would add a transfer to every env step. `threads` and `compile` apply."""

    def __post_init__(self) -> None:
        check_refine_algo(self.algo)
        if self.env_steps < 1 or self.eval_episodes < 1:
            raise ValueError(f"env_steps ({self.env_steps}) and eval_episodes ({self.eval_episodes}) must be at least 1")  # fmt: skip
        if self.finalists < 1 or self.confirm_episodes < 1:
            raise ValueError(f"finalists ({self.finalists}) and confirm_episodes ({self.confirm_episodes}) must be at least 1")  # fmt: skip


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # fmt: skip


def env_workers(config: RefineConfig, num_envs: int) -> int:
    """Worker processes beside this one that step envs (see `RefineConfig.env_workers`)."""
    if config.env_workers is not None:
        return config.env_workers
    extra = min(cores() - 1, num_envs - 1)
    return extra if config.env_steps >= WORKERS_FROM and extra > 0 else 0


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


class Resumable:
    """The checkpoint of one refinement run, beside its output bundle.

    Keyed by the config and the starting bundle's hash: a different run writing to the same
    place starts fresh. Envs are not saved (MuJoCo state, episodes in flight): a resumed run
    resets them with new seeds, and the episodes that were in flight are not in the corpus,
    because only finished episodes are appended.
    """

    def __init__(self, out: Path, config: RefineConfig, bundle: Bundle) -> None:
        self.path = out.parent / f".{out.name}.checkpoint.pt"
        doc = json.dumps({"config": asdict(config), "bundle": bundle.content_hash}, sort_keys=True, default=str)  # fmt: skip
        self.key = hashlib.sha256(doc.encode()).hexdigest()
        self.every = config.checkpoint_every

    def load(self) -> dict[str, Any] | None:
        state = load_checkpoint(self.path)
        return state if state is not None and state.get("key") == self.key else None

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.path, {"key": self.key, **state})

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _run_state(steps: int, last: dict[str, float], sink: EpisodeSink) -> dict[str, Any]:
    """What every online loop checkpoints besides its algorithm: progress, RNG, episode counts."""
    return {"steps": steps, "last": json.dumps(last), "torch_rng": torch.get_rng_state(), "sink": [sink.episodes, sink.successes]}  # fmt: skip


def _restore_run(state: dict[str, Any], sink: EpisodeSink) -> tuple[int, dict[str, float]]:
    """Undo `_run_state`; returns (env steps done, last metrics)."""
    torch.set_rng_state(state["torch_rng"])
    sink.episodes, sink.successes = (int(x) for x in state["sink"])
    return int(state["steps"]), json.loads(state["last"])


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
    torch.set_num_threads(config.runtime.threads)
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
    ckpt = Resumable(out, config, bundle)
    t0 = time.perf_counter()
    if config.algo == "ppo":
        actor, value, metrics = _ppo(bundle, env_fn, config, sink, progress, ckpt)
    else:
        actor, value, metrics = _sac(bundle, env_fn, config, sink, corpus, progress, ckpt)
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
        "resumed_at_env_steps": metrics.get("resumed_at"),
        "success_before": before.to_json(),
        "success_after": after.to_json(),
    }
    save_bundle(
        out, actor, task=task, control_hz=bundle.schema["control_hz"], lineage=lineage, value=value
    )
    ckpt.remove()
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


def _ppo(bundle: Bundle, env_fn: Callable[[], gym.Env], config: RefineConfig, sink: EpisodeSink, progress: Progress | None, ckpt: Resumable) -> tuple[Any, ValueNet | None, dict]:  # fmt: skip
    cfg = config.ppo
    actor = copy.deepcopy(bundle.actor).train()
    if not actor.spec.squash:
        with torch.no_grad():
            actor.log_std.clamp_(max=float(np.log(cfg.max_init_std)))
    if bundle.value is not None:
        value = copy.deepcopy(bundle.value).train()
    else:
        value = ValueNet(actor.spec, actor.encoder.normalizer)
    algo = PPO(actor, value, cfg, compile=config.runtime.compile)
    steps, last, resumed_at = 0, {}, None
    g = torch.Generator().manual_seed(config.seed)
    state = ckpt.load()
    if state is not None:
        algo.load_state_dict(state["algo"])
        steps, last = _restore_run(state, sink)
        resumed_at = steps
        g.set_state(state["g"])
    pool = _pool(env_fn, cfg.num_envs, config, steps, sink)
    try:
        keeper = _BestKeeper(env_fn, config, bundle, restore=state["keeper"] if state else None)
        while steps < config.env_steps:
            roll = _collect(pool, actor, value, cfg.rollout_steps, g, sink)
            steps += cfg.rollout_steps * cfg.num_envs
            last = algo.fit(list(_minibatches(roll, cfg, g)), parallel=cfg.parallel_update and cores() > 1)  # fmt: skip
            algo.rollouts += 1
            if algo.rollouts % config.check_every == 0 or steps >= config.env_steps:
                keeper.check(actor, value, steps)
            if algo.rollouts % ckpt.every == 0 and steps < config.env_steps:
                ckpt.save({"algo": algo.state_dict(), "keeper": keeper.state_dict(), "g": g.get_state(), **_run_state(steps, last, sink)})  # fmt: skip
            if progress is not None:
                progress(min(steps, config.env_steps), config.env_steps)
    finally:
        pool.close()
    actor, value = keeper.best(actor, value)
    return (
        actor.eval(),
        value.eval() if value is not None else None,
        {
            "ppo": last,
            "rollouts": algo.rollouts,
            "checks": keeper.log,
            "confirmation": keeper.confirmation,
            "resumed_at": resumed_at,
        },
    )


def _pool(env_fn: Callable[[], gym.Env], num_envs: int, config: RefineConfig, steps: int, sink: EpisodeSink) -> EnvPool | ProcessEnvPool:  # fmt: skip
    """The run's envs. Made before the keeper scores the starting policy (a fresh run's first
    evaluation), so env workers start up while it runs (`ProcessEnvPool` waits for them only
    when first used)."""
    return make_pool(
        [env_fn] * num_envs,
        workers=env_workers(config, num_envs),
        seed=config.seed * 1_000_003 + steps,  # a resumed run resets its envs with new seeds
        record=sink.corpus is not None,
    )


def _minibatches(roll: dict[str, Any], cfg: PPOConfig, g: torch.Generator) -> Iterator[dict[str, Any]]:  # fmt: skip
    """GAE on a (T, N) rollout, flattened, then `epochs` shuffled passes of minibatches."""
    reward = absorbing_reward(roll["reward"], roll["done"], cfg.gamma, enabled=cfg.absorbing_terminal)  # fmt: skip
    adv, ret = gae(reward, roll["value"], roll["next_value"], roll["done"], cfg.gamma, cfg.gae_lambda)  # fmt: skip
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
            yield {
                k: ({kk: vv[j] for kk, vv in v.items()} if isinstance(v, dict) else v[j])
                for k, v in data.items()
            }


class _BestKeeper:
    """Online RL can collapse a good policy; keep the best ones seen on held-out seeds.

    Every check evaluates the current policy (deterministic, its own seeds, apart from the
    before/after evaluation). The best `finalists` checks that beat the starting bundle's policy
    are kept. Late in a run many checks tie near the ceiling (20/20, 19/20), where one check's
    ranking is noise, so at the end the finalists are scored again on `confirm_episodes` fresh
    seeds and the best of them wins. The best of several noisy scores is biased upwards, so the
    winner must then also beat the starting policy on seeds none of them was chosen on, or the
    start is returned: refinement never returns a policy it measured to be worse. The start is
    kept as modules (the bundle's own), so a learner with another actor architecture (SAC's
    squashed one) fits too.
    """

    def __init__(self, env_fn: Callable[[], gym.Env], config: RefineConfig, start: Bundle, *, restore: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.env_fn, self.config = env_fn, config
        self.start = (copy.deepcopy(start.actor).eval(), start.value)
        self.confirmation: dict[str, Any] | None = None
        self.finalists: list[dict[str, Any]] = []  # best check first: score, env_steps, weights
        if restore is not None:  # from a checkpoint: no need to score the start again
            self.start_score = tuple(json.loads(restore["start_score"]))
            self.log = json.loads(restore["log"])
            self.finalists = [{**f, "score": tuple(json.loads(f["score"]))} for f in restore["finalists"]]  # fmt: skip
            return
        self.start_score = self._score(self.start[0])
        self.log: list[dict[str, float]] = [{"env_steps": 0, "success": self.start_score[0], "return": self.start_score[1]}]  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        finalists = [{**f, "score": json.dumps(f["score"])} for f in self.finalists]
        return {"start_score": json.dumps(self.start_score), "log": json.dumps(self.log), "finalists": finalists}  # fmt: skip

    def _score(self, actor: Any, *, episodes: int | None = None, offset: int = 10_000) -> tuple[float, float]:  # fmt: skip
        n = episodes or self.config.check_episodes
        was_training = actor.training
        r = evaluate(NumpyPolicy(actor), self.env_fn, episodes=n, seed=self.config.eval_seed + offset)  # fmt: skip
        actor.train(was_training)
        return r.success_rate, r.mean_return

    def check(self, actor: Any, value: ValueNet | None, steps: int) -> None:
        score = self._score(actor)
        self.log.append({"env_steps": steps, "success": score[0], "return": score[1]})
        worst = self.finalists[-1]["score"] if len(self.finalists) == self.config.finalists else None  # fmt: skip
        if score > self.start_score and (worst is None or score > worst):
            v = copy.deepcopy(value.state_dict()) if value is not None else None
            entry = {"score": score, "env_steps": steps, "actor": copy.deepcopy(actor.state_dict()), "value": v}  # fmt: skip
            self.finalists = sorted([*self.finalists, entry], key=lambda f: f["score"], reverse=True)[: self.config.finalists]  # fmt: skip

    def best(self, actor: Any, value: ValueNet | None) -> tuple[Any, ValueNet | None]:
        """The confirmed winner (`actor`/`value` loaded with it) or the starting modules."""
        if not self.finalists:
            return self.start
        n = self.config.confirm_episodes
        final = []
        for f in self.finalists:  # best check first
            actor.load_state_dict(f["actor"])
            final.append(self._score(actor, episodes=n, offset=20_000))
        winner = self.finalists[final.index(max(final))]  # the first of equals
        actor.load_state_dict(winner["actor"])
        if len(final) == 1:  # nothing was chosen on these seeds: they serve the comparison
            offset, best = 20_000, final[0]
        else:  # the winner's score there is the best of several: compare on fresh seeds
            offset = 30_000
            best = self._score(actor, episodes=n, offset=offset)
        start = self._score(self.start[0], episodes=n, offset=offset)
        kept = best > start
        self.confirmation = {
            "episodes": n,
            "finalists": [
                {"env_steps": f["env_steps"], "check": f["score"], "final": s}
                for f, s in zip(self.finalists, final, strict=True)
            ],
            "best": best,
            "start": start,
            "kept": "best" if kept else "start",
            "env_steps": winner["env_steps"],
        }
        if not kept:
            return self.start
        if value is not None and winner["value"] is not None:
            value.load_state_dict(winner["value"])
        return actor, value


def _collect(pool: EnvPool | ProcessEnvPool, actor: GaussianActor, value: ValueNet, T: int, g: torch.Generator, sink: EpisodeSink) -> dict[str, Any]:  # fmt: skip
    """A (T, N) on-policy rollout of the current weights, as tensors, with values for GAE.

    The weights act as a snapshot (`Behaviour`, NumPy copies for low-dim policies) wherever
    the envs live, each env worker acting for its own share (`EnvPool.segment`); the
    exploration noise is drawn here from `g`, so a seeded run is reproducible for a given
    worker count. Episodes that finished during the rollout go to the corpus at its end.
    """
    noise = torch.randn((T, pool.n, actor.spec.action_dim), generator=g).numpy()
    seg = pool.segment(Behaviour.of(actor, value), noise)
    sink(seg.finished)
    return to_torch(seg.arrays)


SAC_BLOCK = 5_000
"""Env steps per SAC checkpoint block (see `RefineConfig.checkpoint_every`)."""


def _sac(bundle: Bundle, env_fn: Callable[[], gym.Env], config: RefineConfig, sink: EpisodeSink, corpus: Corpus | None, progress: Progress | None, ckpt: Resumable) -> tuple[Any, ValueNet | None, dict]:  # fmt: skip
    cfg = config.sac
    norm = bundle.actor.encoder.normalizer
    algo = SAC(bundle.spec, norm, cfg, prior=bundle.actor)
    replay = ReplaySource(capacity=max(config.env_steps, 1000), seed=config.seed, n_step=cfg.n_step)
    source: Any = replay
    offline: OfflineSource | None = None
    if corpus is not None:
        snap = corpus.snapshot(Filter(task=bundle.schema["task"]))
        if snap.entries:
            cache = TrainingCache.build(corpus, snap, obs_keys=list(bundle.spec.obs_shapes), cameras=list(bundle.spec.cameras))  # fmt: skip
            offline = OfflineSource(cache, seed=config.seed, n_step=cfg.n_step)
            source = MixedSource(offline, replay)
    steps, last, resumed_at = 0, {}, None
    state = ckpt.load()
    if state is not None:
        algo.load_state_dict(state["algo"])
        replay.load_state_dict(state["replay"])
        if offline is not None and state["offline_rng"]:
            offline.set_rng_state(json.loads(state["offline_rng"]))
        steps, last = _restore_run(state, sink)
        resumed_at = steps
    pool = _pool(env_fn, cfg.num_envs, config, steps, sink)
    block = steps // SAC_BLOCK
    try:
        keeper = _BestKeeper(env_fn, config, bundle, restore=state["keeper"] if state else None)
        obs = pool.batch()
        while steps < config.env_steps:
            pi = NumpyActor(algo.actor)  # a snapshot of the weights after the last update
            act = pi.act(pi.sample(obs)[0]).astype(np.float32)
            if algo.prior is not None:  # IBRL: the prior's action where the critics prefer it
                act = algo.choose(to_torch(obs), torch.from_numpy(act)).numpy()
            next_obs, r, term, trunc, final, finished = pool.step(act)
            sink(finished)
            true_next = {k: v.copy() for k, v in next_obs.items()}
            for i, fo in final.items():
                for k in true_next:
                    true_next[k][i] = fo[k]
            replay.add(obs, act, r, true_next, term.astype(np.float32), end=term | trunc)
            obs = next_obs
            steps += pool.n
            if steps >= cfg.warmup_steps:
                for _ in range(cfg.updates_per_step):
                    last = algo.update(source.sample(cfg.batch_size))
            if steps // SAC_BLOCK > block or steps >= config.env_steps:
                block = steps // SAC_BLOCK
                keeper.check(algo.actor, None, steps)
                if block % ckpt.every == 0 and steps < config.env_steps:
                    ckpt.save({"algo": algo.state_dict(), "replay": replay.state_dict(), "keeper": keeper.state_dict(),
                               "offline_rng": json.dumps(offline.rng_state()) if offline else "",
                               **_run_state(steps, last, sink)})  # fmt: skip
            if progress is not None:
                progress(min(steps, config.env_steps), config.env_steps)
    finally:
        pool.close()
    actor, value = keeper.best(algo.actor, None)
    metrics = {"sac": last, "checks": keeper.log, "confirmation": keeper.confirmation, "resumed_at": resumed_at}  # fmt: skip
    return actor.eval(), value, metrics
