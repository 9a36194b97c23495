"""Multi-step offline improvement (Uni-O4 / BPPO): several gated generations per snapshot.

Evaluate once: the IQL critic is fitted on the snapshot and frozen. Improve in generations:
PPO-clip against the last *accepted* policy pi_old, with advantages from the frozen critic on
actions sampled from pi_old at dataset states, plus (weight `awr_weight`) advantage-weighted
regression towards the dataset's own actions, where the critic was fitted. Every K steps a gate
scores the candidate (OPE and, when a simulator exists, real rollouts) and only a candidate
that beats pi_old by a margin becomes the new pi_old. Staying close to pi_old (the clip) is what keeps the policy in the
region the critic was fitted on.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from flywheel.algorithms.base import Batch, DataKind, OfflineSource, UpdateSchedule, scalars
from flywheel.algorithms.iql import IQLCritic
from flywheel.algorithms.optim import Metrics, adam_step
from flywheel.evaluation import paired_gain
from flywheel.policies import GaussianActor


@dataclass(frozen=True, kw_only=True)
class MultiStepConfig:
    """Offline improvement settings (Uni-O4 defaults where they fit a CPU budget)."""

    steps: int = 2000
    """Total improvement gradient steps."""
    gate_every: int = 250
    """K: steps per generation, i.e. between gate decisions."""
    clip: float = 0.25
    """PPO ratio clip against pi_old."""
    awr_weight: float = 0.1
    """Weight of the advantage-weighted regression term on dataset actions (`awr_loss`);
    0 is the plain PPO-clip improvement of Uni-O4 / BPPO. At 0.1 the candidates of push, lift
    and pick_place scored +2 to +9 points over BC on 500 evaluation seeds; with PPO-clip alone,
    -7 to +4 (docs/benchmarks.md)."""
    awr_beta: float = 1.0
    """Temperature of that term: weights exp(beta * A / std(A)) over the batch."""
    awr_max_weight: float = 100.0
    """Cap on one dataset action's weight before normalising (AWR: 20; IQL: 100)."""
    lr: float = 1e-4
    """Actor learning rate, decayed linearly to 0."""
    grad_clip: float = 0.5
    """Max gradient norm."""
    margin: float = 0.05
    """OPE gate: the candidate must beat pi_old by this fraction of |J(pi_old)| (RL-100: 5%),
    where OPE is the only evidence."""
    margin_with_sim: float = 0.0
    """The OPE margin where real rollouts vote too: their paired z-test is then the margin, and
    OPE need only not fall. In 12 task runs of the quality benchmark (three training seeds), 5%
    was the only objection to five candidates the rollouts passed, all five better than pi_old
    on the 500 evaluation seeds (+1 to +4 points; docs/benchmarks.md)."""
    ope_horizon: int = 10
    """H of AM-Q model rollouts (Uni-O4: 2-100 for manipulation; shrink if values explode)."""
    ope_states: int = 512
    """Dataset start states for AM-Q."""
    sim_episodes: int = 600
    """Real rollouts per gate decision when a simulator is given (same seeds for both). The
    paired gain's standard error is about sqrt(d / n) with d the fraction of seeds whose outcome
    differs (~0.4 between neighbouring generations here): at 100 it is ~0.065, so only gains
    above ~11 points pass; at 300, ~0.037, and push's and lift's candidates at +3 to +6 points
    (500 evaluation seeds) were still refused at z 1.3-1.6; at 600, ~0.026 (~4 points pass)."""
    sim_z: float = 1.645
    """The sim gain (paired per seed) must be at least this many standard errors above zero
    (one-sided 95%): a tie or a win on a seed or two is noise, not an improvement. For success,
    with w seeds won and l lost, z = (w - l) / sqrt(w + l) about; 1.0 would pass a 1-0."""

    def __post_init__(self) -> None:
        if self.steps < self.gate_every or self.gate_every < 1 or not 0 < self.clip < 1:
            raise ValueError(f"need steps >= gate_every >= 1 and 0 < clip < 1, not steps {self.steps}, gate_every {self.gate_every}, clip {self.clip}")  # fmt: skip
        if self.margin != self.margin or self.margin_with_sim != self.margin_with_sim:
            # NaN: every comparison with it is False, so all would be accepted
            raise ValueError("margin is NaN (use -inf on purpose to accept every generation)")
        if self.sim_episodes < 2:  # a paired standard error needs two seeds
            raise ValueError(f"sim_episodes must be at least 2, not {self.sim_episodes}")
        if not self.sim_z >= 0:  # NaN too
            raise ValueError(f"sim_z must be at least 0, not {self.sim_z}")
        if not (self.awr_weight >= 0 and self.awr_beta > 0 and self.awr_max_weight > 0):
            raise ValueError(f"need awr_weight >= 0, awr_beta > 0 and awr_max_weight > 0, not {self.awr_weight}, {self.awr_beta}, {self.awr_max_weight}")  # fmt: skip


def ppo_clip_loss(
    logp: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor, clip: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The PPO surrogate: -E[min(r A, clip(r, 1-eps, 1+eps) A)], r = pi / pi_old (Schulman 2017)."""
    ratio = (logp - logp_old).exp()
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    clipped = ((ratio - 1).abs() > clip).float().mean()
    return -surrogate.mean(), {"ratio": ratio.detach().mean(), "clip_frac": clipped}


def awr_loss(
    logp: torch.Tensor, adv: torch.Tensor, beta: float, max_weight: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Advantage-weighted regression (Peng 2019; IQL's extraction) on dataset actions: the
    weighted NLL -sum(w log pi(a|s)) / sum(w), w = min(exp(beta A / std(A)), max_weight).

    Why beside the clip loss: PPO's actions are pi_old's samples, within its small std (~0.08
    after BC on these corpora) of its mean, where the critic interpolates between the noisier
    data actions it was fitted on; the dataset actions are where its advantages are best
    founded. logp, adv: (B,)."""
    w = torch.exp(beta * adv / (adv.std() + 1e-8)).clamp(max=max_weight)
    return -(w * logp).sum() / w.sum(), {"awr_weight_max": w.max()}


@dataclass
class GateDecision:
    """One generation's scores and whether it replaced pi_old."""

    generation: int
    step: int
    ope_candidate: float | None
    ope_accepted: float | None
    sim_candidate: float | None = None
    sim_accepted: float | None = None
    sim_return_candidate: float | None = None
    sim_return_accepted: float | None = None
    sim_gain: float | None = None
    """Mean per-seed gain of the candidate over pi_old: success, or return where the two
    succeeded on exactly the same seeds (`sim_gain_on`)."""
    sim_gain_se: float | None = None
    sim_gain_on: str | None = None
    sim_seed: int | None = None
    """First seed of the rollouts' block (`sim_episodes` seeds from it)."""
    accepted: bool = False
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sim_evidence(
    d: GateDecision, candidate: dict[str, list[float]], accepted: dict[str, list[float]]
) -> GateDecision:
    """Fill the paired sim gain from per-seed `success` and `return` lists. Success decides;
    where both policies succeeded on exactly the same seeds (both always fail, say, or both
    always succeed), success says nothing and return decides."""
    on = "return" if candidate["success"] == accepted["success"] else "success"
    d.sim_gain, d.sim_gain_se = paired_gain(candidate[on], accepted[on])
    d.sim_gain_on = on
    return d


def decide(
    d: GateDecision,
    margin: float,
    z: float = MultiStepConfig.sim_z,
    margin_with_sim: float = MultiStepConfig.margin_with_sim,
) -> GateDecision:
    """Accept only if OPE improves by the margin and real rollouts (if any) show a gain at
    least `z` standard errors above zero, paired per seed (`sim_evidence`). Where rollouts vote,
    OPE's margin is `margin_with_sim`: two margins in a row refuse more true gains than
    either alone, and the rollouts are the better evidence."""
    reasons = []
    ok = True
    gain, se = d.sim_gain, d.sim_gain_se
    if gain is not None and se is not None:
        margin = margin_with_sim
    if d.ope_candidate is not None and d.ope_accepted is not None:
        need = d.ope_accepted + margin * max(abs(d.ope_accepted), 1e-6)
        if d.ope_candidate < need:
            ok = False
            reasons.append(f"OPE {d.ope_candidate:.4g} < {need:.4g} (accepted + {margin:.0%})")
    if gain is not None and se is not None and not (gain > 0 and gain >= z * se):
        ok = False
        reasons.append(f"sim {d.sim_gain_on} gain {gain:+.3g} < {z:g} x its standard error {se:.3g}")  # fmt: skip
    d.accepted = ok
    d.reason = "improved" if ok else "; ".join(reasons)
    return d


class MultiStepImprover:
    """PPO-clip improvement of an actor against pi_old with a frozen critic's advantages.

    Given the snapshot's `rows` (its source), what a step takes as fixed is looked up per
    transition (`row`), not recomputed per batch: the frozen critic's V(s) and min Q(s, a) of
    the data's action are evaluated once over the whole snapshot (evaluate once, literally),
    pi_old's mean once per acceptance. That leaves one actor pass and one Q pass (on pi_old's
    sampled actions) per step, 5 of the 9 network passes; a table costs a pass over every row,
    so it pays only for snapshots small beside what the steps draw (`OfflineRun._improver`).
    Without `rows`, or for a batch without `row`, the same values are computed on the batch.
    A batch's `row` must index `rows`' snapshot (feed it batches from `rows` itself); one from
    another snapshot is refused where its actions differ from the rows' own (as continuous,
    noisy actions do; rows that share one action cannot be told apart this way).
    """

    name = "multistep"
    schedule = UpdateSchedule.MULTI_STEP
    data = DataKind.OFFLINE

    def __init__(
        self,
        actor: GaussianActor,
        critic: IQLCritic,
        config: MultiStepConfig | None = None,
        *,
        rows: OfflineSource | None = None,
        compile: bool = False,
    ) -> None:
        if actor.spec.squash:  # PPO-clip needs log pi of given actions: a plain Gaussian's
            raise ValueError("multi-step improves an unsquashed Gaussian actor (BC's), not a tanh-squashed one")  # fmt: skip
        self.config = cfg = config or MultiStepConfig()
        self.critic = critic
        self.rows = rows
        self.actor = copy.deepcopy(actor)
        self.accepted = copy.deepcopy(actor).requires_grad_(False)
        # per row: V(s), min Q(s, a) and the dataset action a (which checks a batch's rows)
        self._critic_table: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._old_mean: torch.Tensor | None = None  # pi_old's mean per row
        self.step = adam_step(self.losses, [self.actor], cfg.lr, compile=compile, max_norm=cfg.grad_clip)  # fmt: skip

    def losses(
        self,
        obs: Mapping[str, torch.Tensor],
        action: torch.Tensor,
        noise: torch.Tensor,
        old_mean: torch.Tensor,
        v: torch.Tensor,
        q_data: torch.Tensor,
    ) -> tuple[torch.Tensor, Metrics]:
        """Actions of pi_old at dataset states, scored by the frozen critic, then the clip loss;
        plus, with `awr_weight`, the advantage-weighted regression on the dataset `action`s.

        `noise` (B, A) is standard normal: the action is pi_old's mean + std * noise. Fixed
        during the step (`fixed`): pi_old's mean `old_mean` (B, A), the critic's `v` = V(s) and
        `q_data` = min Q(s, action), (B,). One actor pass serves both terms.
        """
        cfg = self.config
        with torch.no_grad():
            d_old = self.accepted.around(old_mean)
            a = old_mean + d_old.std * noise  # (B, A)
            logp_old = d_old.log_prob(a)
            adv = self.critic.q_value(obs, a) - v
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        d = self.actor.dist(obs)
        loss, metrics = ppo_clip_loss(d.log_prob(a), logp_old, adv, cfg.clip)
        if cfg.awr_weight > 0:
            awr, m = awr_loss(d.log_prob(action), q_data - v, cfg.awr_beta, cfg.awr_max_weight)
            loss = loss + cfg.awr_weight * awr
            metrics = {**metrics, **m, "awr_loss": awr.detach()}
        return loss, metrics

    @torch.no_grad()
    def fixed(
        self, obs: Mapping[str, torch.Tensor], action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What a step takes as given at these transitions: pi_old's mean, V(s), min Q(s, a)."""
        return self._old_means(obs), *self._critic_values(obs, action)

    def _old_means(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.accepted.dist(obs).mean

    def _critic_values(self, obs: Mapping[str, torch.Tensor], action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        return self.critic.v(obs), self.critic.q_value(obs, action)

    def _lookup(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.rows is None or "row" not in batch:
            return self.fixed(batch["obs"], batch["action"])
        with torch.no_grad():
            if self._critic_table is None:  # once per critic
                vqa = [(*self._critic_values(c["obs"], c["action"]), c["action"]) for c in self.rows.in_order()]  # fmt: skip
                self._critic_table = tuple(torch.cat(col) for col in zip(*vqa, strict=True))  # type: ignore[assignment]
            if self._old_mean is None:  # once per acceptance
                self._old_mean = torch.cat([self._old_means(c["obs"]) for c in self.rows.in_order()])  # fmt: skip
        row = batch["row"]
        v, q, actions = self._critic_table
        # a batch of another snapshot would silently look up other transitions' values: its
        # rows' actions must be these (~10 us a step; `scalars` syncs a GPU every step anyway)
        outside = int(row.min()) < 0 or int(row.max()) >= len(actions)
        if outside or not torch.equal(actions.index_select(0, row), batch["action"]):
            raise ValueError("the batch's rows are not from this improver's snapshot (`rows`): feed it batches sampled from `rows`")  # fmt: skip
        return self._old_mean.index_select(0, row), v.index_select(0, row), q.index_select(0, row)

    def reevaluate(self) -> None:
        """Forget the per-row values: the next update recomputes them. For a critic changed
        after this improver's first update (the retrain never does: it fits, then freezes)."""
        self._critic_table = self._old_mean = None

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        self.step.lr = cfg.lr * max(0.0, 1.0 - self.step.steps / cfg.steps)  # linear decay to 0
        # the noise is drawn here, outside a compiled step: same random stream either way
        noise = torch.randn_like(batch["action"])
        loss, metrics = self.step(batch["obs"], batch["action"], noise, *self._lookup(batch))
        return scalars({"loss": loss, **metrics})

    def accept(self) -> None:
        """The candidate becomes pi_old (its means per row are recomputed at the next update)."""
        self.accepted.load_state_dict(self.actor.state_dict())
        self._old_mean = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "accepted": self.accepted.state_dict(),
            "opt": self.step.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.accepted.load_state_dict(state["accepted"])
        self.step.load_state_dict(state["opt"])
        self.reevaluate()

    def config_json(self) -> dict[str, Any]:
        return asdict(self.config)
