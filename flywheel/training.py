"""The offline training loop: snapshot -> BC (one-step) -> IQL + gated PPO generations (multi-step).

This is the one place where data, algorithms, evaluation and gates meet. It checkpoints every
`checkpoint_every` steps (weights, optimisers, RNG states, generation records), so a killed run
re-run with the same arguments resumes and ends with exactly the result of an uninterrupted run.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from flywheel.algorithms.base import OfflineSource, to_device
from flywheel.algorithms.bc import BC, BCConfig
from flywheel.algorithms.iql import IQLConfig, IQLCritic
from flywheel.algorithms.multistep import (
    GateDecision,
    MultiStepConfig,
    MultiStepImprover,
    decide,
    sim_evidence,
)
from flywheel.checkpoints import load_checkpoint, save_checkpoint
from flywheel.corpus import Corpus, Filter, TrainingCache
from flywheel.evaluation import evaluate
from flywheel.ope import DynamicsConfig, DynamicsEnsemble, am_q, q_of_policy
from flywheel.policies import GaussianActor, Normalizer, NumpyPolicy, PolicySpec, save_bundle
from flywheel.runtime import Runtime

GATE_SEED = 1_000_000
"""Seeds of gate rollouts: apart from collection seeds, paired across candidates. Block b
(`sim_episodes` seeds from GATE_SEED + b * sim_episodes) serves until a candidate is accepted
on it; the next block then re-scores the new pi_old (`_gate`)."""

Progress = Callable[[str, int, int], None]
Observer = Callable[[dict[str, Any], GaussianActor], None]
"""Called with (a copy of) each generation's record and the policy it scored (generation 0: the
start). The policy is the live one being trained: copy it before changing it (`.eval()`,
`.cpu()`, ...)."""


@dataclass(frozen=True, kw_only=True)
class OfflineConfig:
    """One offline training run on a corpus snapshot."""

    task: str
    """Task whose episodes are trained on."""
    algo: Literal["bc", "multistep"] = "multistep"
    """`bc` stops after one-step BC; `multistep` adds the IQL critic and gated generations."""
    seed: int = 0
    """Seed of sampling and initialisation (with the thread count, fixes the result)."""
    batch_size: int = 256
    """Batch size of every stage."""
    bc_steps: int = 3000
    """BC gradient steps."""
    iql_steps: int = 3000
    """IQL critic gradient steps."""
    failure_weight: float = 0.0
    """BC weight of steps from failed episodes (0 = success-filtered BC, 1 = plain BC)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden sizes of every network."""
    cameras: tuple[str, ...] = ()
    """Camera streams the policy sees (empty: low-dim only)."""
    checkpoint_every: int = 500
    """Steps between checkpoints."""
    bc: BCConfig = field(default_factory=BCConfig)
    iql: IQLConfig = field(default_factory=IQLConfig)
    multistep: MultiStepConfig = field(default_factory=MultiStepConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    runtime: Runtime = field(default_factory=Runtime)

    def __post_init__(self) -> None:
        if self.seed < 0:  # NumPy's generators refuse it, but only once a stage starts
            raise ValueError(f"seed must be a non-negative integer, not {self.seed}")

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=list))

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:10]


class OfflineRun:
    """State of one run; `run()` executes the stages it has not finished yet."""

    def __init__(
        self,
        corpus: Corpus,
        config: OfflineConfig,
        *,
        home: Path,
        env_fn: Callable[[], gym.Env] | None = None,
        progress: Progress | None = None,
        observe: Observer | None = None,
    ) -> None:
        """`observe` sees every generation's record and the policy it scored as the gate
        decides, e.g. to measure it further (a resumed run does not replay past generations)."""
        self.device = config.runtime.apply()
        self.corpus, self.cfg, self.env_fn = corpus, config, env_fn
        self.progress = progress or (lambda stage, step, total: None)
        self.observe = observe or (lambda record, actor: None)
        snap = corpus.snapshot(Filter(task=config.task))
        if not snap.entries:
            raise ValueError(f"{corpus.path}: no episodes of task {config.task!r} to train on")
        self.run_id = (
            f"{config.task}-{config.algo}-s{config.seed}-g{snap.generation}-{config.fingerprint()}"
        )
        self.dir = home / "runs" / self.run_id
        self.bundle_path = home / "bundles" / self.run_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_path = self.dir / "checkpoint.pt"
        ckpt = load_checkpoint(self.ckpt_path)
        if ckpt is not None:  # resume on exactly the recorded snapshot
            snap = corpus.replay(json.loads(ckpt["snapshot"]))
        self.snapshot = snap
        self.cache = TrainingCache.build(corpus, snap, cameras=config.cameras)
        self.spec = PolicySpec(
            obs_shapes={k: v.shape[1:] for k, v in self.cache.obs.items()},
            cameras={c: v.shape[1:] for c, v in self.cache.images.items()},
            action_dim=int(self.cache.action.shape[1]),
            hidden=config.hidden,
        )
        torch.manual_seed(config.seed)
        self.norm = Normalizer.from_stats(self.spec.obs_shapes, self.cache.stats)
        ok = np.repeat(np.array([bool(s) for s in self.cache.success]), self.cache.lengths)
        w = np.where(ok, 1.0, config.failure_weight)
        dev, fast = str(self.device), config.runtime.compile
        self.bc_source = OfflineSource(
            self.cache, seed=config.seed, weights=w if w.sum() > 0 else None, device=dev
        )
        self.source = OfflineSource(self.cache, seed=config.seed + 1, device=dev)
        self.bc = BC(self.spec, self.norm, config.bc, compile=fast)
        self.iql = IQLCritic(self.spec, self.norm, config.iql, compile=fast)
        self.dyn = DynamicsEnsemble(
            self.norm, self.spec.obs_shapes, self.spec.action_dim, config.dynamics
        )
        for algo in (self.bc, self.iql):
            to_device(algo, self.device)
        self.dyn.to(self.device)
        self.improver: MultiStepImprover | None = None
        self.stage, self.step = "bc", 0
        self.metrics: dict[str, Any] = {}
        self.generations: list[dict[str, Any]] = []
        self.gate_cache: dict[str, Any] = {}
        if ckpt is not None:
            self._restore(ckpt)

    # --- checkpoints ----------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "step": self.step,
            "snapshot": json.dumps(self.snapshot.to_json()),
            "bc": self.bc.state_dict(),
            "iql": self.iql.state_dict(),
            "dyn": self.dyn.state_dict(),
            "improver": None if self.improver is None else self.improver.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "rng_np": json.dumps([self.bc_source.rng_state(), self.source.rng_state()]),
            "records": json.dumps([self.metrics, self.generations, self.gate_cache]),
        }

    def _restore(self, s: dict[str, Any]) -> None:
        self.stage, self.step = s["stage"], int(s["step"])
        self.bc.load_state_dict(s["bc"])
        self.iql.load_state_dict(s["iql"])
        self.dyn.load_state_dict(s["dyn"])
        if s["improver"] is not None:
            self.improver = self._improver(self.bc.actors[0])
            self.improver.load_state_dict(s["improver"])
        torch.set_rng_state(s["rng_torch"])
        a, b = json.loads(s["rng_np"])
        self.bc_source.set_rng_state(a)
        self.source.set_rng_state(b)
        self.metrics, self.generations, self.gate_cache = json.loads(s["records"])

    def _checkpoint(self) -> None:
        save_checkpoint(self.ckpt_path, self._state())

    # --- stages ---------------------------------------------------------------------------

    def _loop(self, stage: str, total: int, update: Callable[[], dict[str, float]], on_step: Callable[[int], None] | None = None) -> dict[str, float]:  # fmt: skip
        last: dict[str, float] = {}
        while self.step < total:
            last = update()
            self.step += 1
            if on_step is not None:
                on_step(self.step)
            if self.step % self.cfg.checkpoint_every == 0 or self.step == total:
                self._checkpoint()
            self.progress(stage, self.step, total)
        return last

    def _next_stage(self, stage: str) -> None:
        self.stage, self.step = stage, 0
        self._checkpoint()

    def run(self) -> dict[str, Any]:
        """Run (or resume) every stage; returns the result with the bundle path."""
        cfg = self.cfg
        if self.bundle_path.exists():
            return json.loads((self.dir / "result.json").read_text())
        bs = cfg.batch_size
        if self.stage == "bc":
            last = self._loop("bc", cfg.bc_steps, lambda: self.bc.update(self.bc_source.sample(bs)))
            self.metrics["bc"] = last
            self._next_stage("iql" if cfg.algo == "multistep" else "done")
        if self.stage == "iql":
            last = self._loop("iql", cfg.iql_steps, lambda: self.iql.update(self.source.sample(bs)))
            self.metrics["iql"] = last
            if not self.spec.cameras:  # image policies are scored without the model (`_gate`)
                self.metrics["dynamics"] = self.dyn.fit(self.cache, seed=cfg.seed)
            self._next_stage("multistep")
        actor = self._bc_actor()
        if self.stage == "multistep":
            if self.improver is None:
                self.improver = self._improver(actor)
                self.generations.append(self._gate(0, accepted_only=True))
                self.observe(dict(self.generations[-1]), self.improver.accepted)
            imp = self.improver
            every = cfg.multistep.gate_every

            def on_step(step: int) -> None:
                if step % every == 0:
                    d = self._gate(step // every)
                    self.generations.append(d)
                    self.observe(dict(d), imp.actor)
                    if d["accepted"]:
                        imp.accept()
                        self._accepted_scores()

            last = self._loop(
                "multistep",
                cfg.multistep.steps,
                lambda: imp.update(self.source.sample(bs)),
                on_step,
            )
            self.metrics["multistep"] = last
            self._next_stage("done")
        if self.improver is not None:
            actor = self.improver.accepted
        return self._finish(actor)

    def _improver(self, actor: GaussianActor) -> MultiStepImprover:
        """Per-row tables of what the step holds fixed (`MultiStepImprover`) only where they
        pay, counted in network passes over one transition: a batch computes pi_old's mean, V
        and the double Q (4) on each of its rows, every step; the tables cost 3 per transition
        for the critic, once, and 1 for pi_old at the start and after each acceptance (at most
        one per generation)."""
        cfg, ms = self.cfg, self.cfg.multistep
        tables = self.cache.num_steps * (4 + ms.steps // ms.gate_every) <= 4 * ms.steps * cfg.batch_size  # fmt: skip
        return MultiStepImprover(actor, self.iql, cfg.multistep, rows=self.source if tables else None, compile=cfg.runtime.compile)  # fmt: skip

    def _bc_actor(self) -> GaussianActor:
        """Best ensemble member on a fixed batch (its own RNG: resuming must not shift others)."""
        held = OfflineSource(self.cache, seed=self.cfg.seed + 99, device=str(self.device)).sample(
            min(4096, self.cache.num_steps)
        )
        return self.bc.best_member(held)

    def _accepted_scores(self) -> None:
        """The accepted candidate's OPE becomes pi_old's; its rollouts do not. They won the
        decision on this block of seeds, and a winner's score on the seeds it was chosen on is
        biased upwards by the luck that helped it win (up to about a standard error, ~2.6
        points at 600 rollouts, when the decision was close): every later candidate would have
        to beat that luck too. pi_old is rolled out afresh on the next block."""
        block = self.gate_cache.get("block", 0) + 1
        self.gate_cache = {"ope": self.gate_cache["candidate"]["ope"], "block": block}

    def _gate(self, generation: int, *, accepted_only: bool = False) -> dict[str, Any]:
        """Score pi_old (cached: the start's scores, then those of the candidate accepted last,
        its rollouts on a fresh block of seeds) and the candidate; decide."""
        cfg = self.cfg.multistep
        imp = self.improver
        assert imp is not None
        start = self._ope_start

        def ope(actor: GaussianActor) -> float:
            policy = lambda o: actor.mode(o)  # noqa: E731
            if self.spec.cameras:  # the model cannot predict frames: score at dataset states
                return q_of_policy(policy, self.iql.q_value, start)
            return am_q(
                policy,
                self.iql.q_value,
                self.dyn,
                start,
                horizon=cfg.ope_horizon,
                seed=self.cfg.seed,
            )

        first_seed = GATE_SEED + self.gate_cache.get("block", 0) * cfg.sim_episodes

        def sim(actor: GaussianActor) -> dict[str, list[float]] | None:
            """Per-seed success and return on the block's seeds (JSON: kept in checkpoints)."""
            if self.env_fn is None:
                return None
            on_cpu = copy.deepcopy(actor).cpu()  # rollouts step one env at a time: CPU work
            r = evaluate(NumpyPolicy(on_cpu), self.env_fn, episodes=cfg.sim_episodes, seed=first_seed)  # fmt: skip
            return {"success": [float(x) for x in r.successes], "return": r.returns}

        def means(scores: dict[str, list[float]]) -> tuple[float, float]:
            return float(np.mean(scores["success"])), float(np.mean(scores["return"]))

        if "ope" not in self.gate_cache:
            self.gate_cache["ope"] = ope(imp.accepted)
        if "sim" not in self.gate_cache:
            self.gate_cache["sim"] = sim(imp.accepted)
        acc_sim = self.gate_cache["sim"]
        d = GateDecision(
            generation=generation,
            step=self.step,
            ope_candidate=None,
            ope_accepted=self.gate_cache["ope"],
            sim_seed=first_seed if acc_sim is not None else None,
        )
        if acc_sim is not None:
            d.sim_accepted, d.sim_return_accepted = means(acc_sim)
        if accepted_only:
            d.reason = "behaviour-cloned starting point"
            return d.to_json()
        d.ope_candidate = ope(imp.actor)
        cand_sim = sim(imp.actor)
        self.gate_cache["candidate"] = {"ope": d.ope_candidate}
        if cand_sim is not None and acc_sim is not None:
            d.sim_candidate, d.sim_return_candidate = means(cand_sim)
            sim_evidence(d, cand_sim, acc_sim)
        return decide(d, cfg.margin, cfg.sim_z, cfg.margin_with_sim).to_json()

    @functools.cached_property
    def _ope_start(self) -> dict[str, torch.Tensor]:
        """OPE's dataset start states (camera frames too): drawn once per run, the same for
        every generation."""
        rng = np.random.default_rng(self.cfg.seed)
        rows = rng.choice(
            len(next(iter(self.cache.obs.values()))), size=self.cfg.multistep.ope_states
        )
        views = {**self.cache.obs, **self.cache.images}
        return {k: torch.as_tensor(v[rows], device=self.device) for k, v in views.items()}

    def _finish(self, actor: GaussianActor) -> dict[str, Any]:
        control_hz = float(self.snapshot.entries[0].control_hz)
        lineage = {
            "run_id": self.run_id,
            "algorithm": self.cfg.algo,
            "snapshot": self.snapshot.to_json(),
            "parent": None,
            "config": self.cfg.to_json(),
            "seed": self.cfg.seed,
            "metrics": self.metrics,
            "generations": self.generations,
            "runtime": self.cfg.runtime.describe(),
        }
        value = self.iql.v if self.cfg.algo == "multistep" else None
        save_bundle(
            self.bundle_path,
            actor,
            task=self.cfg.task,
            control_hz=control_hz,
            lineage=lineage,
            value=value,
        )
        result = {
            "bundle": str(self.bundle_path),
            "run_id": self.run_id,
            "snapshot": self.snapshot.to_json(),
            "metrics": {**self.metrics, "generations": self.generations},
        }
        (self.dir / "result.json").write_text(json.dumps(result, indent=1, default=str))
        return result


def train_offline(corpus: Corpus, config: OfflineConfig, *, home: Path, env_fn: Callable[[], gym.Env] | None = None, progress: Progress | None = None, observe: Observer | None = None) -> dict[str, Any]:  # fmt: skip
    """Train (or resume) one offline run and save its bundle; see `OfflineRun`."""
    return OfflineRun(corpus, config, home=home, env_fn=env_fn, progress=progress, observe=observe).run()  # fmt: skip
