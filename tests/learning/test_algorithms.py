"""The shared contract: every algorithm's `update` runs, and fits a fixed batch (loss decreases)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from flywheel.algorithms.base import (
    DataKind,
    MixedSource,
    OfflineSource,
    ReplaySource,
    UpdateSchedule,
    absorbing_reward,
)
from flywheel.algorithms.bc import BC, BCConfig, bc_loss
from flywheel.algorithms.iql import IQLConfig, IQLCritic, expectile_loss
from flywheel.algorithms.multistep import (
    GateDecision,
    MultiStepConfig,
    MultiStepImprover,
    awr_loss,
    decide,
    ppo_clip_loss,
    sim_evidence,
)
from flywheel.algorithms.ppo import PPO, PPOConfig, gae
from flywheel.algorithms.sac import SAC, SACConfig
from flywheel.evaluation import paired_gain
from flywheel.policies import GaussianActor, Normalizer, PolicySpec, ValueNet


def _spec(cache) -> PolicySpec:
    return PolicySpec(
        obs_shapes={k: v.shape[1:] for k, v in cache.obs.items()},
        action_dim=cache.action.shape[1],
        hidden=(64, 64),
    )


def _norm(cache, spec) -> Normalizer:
    return Normalizer.from_stats(spec.obs_shapes, cache.stats)


def _make(name, cache, *, compile=False):
    torch.manual_seed(0)
    spec = _spec(cache)
    norm = _norm(cache, spec)
    if name == "bc":
        return BC(spec, norm, BCConfig(lr=3e-3)), "loss"
    if name == "bc-ensemble":
        return BC(spec, norm, BCConfig(lr=3e-3, ensemble=3)), "nll"
    if name == "iql":
        return IQLCritic(spec, norm, IQLConfig(lr=1e-3)), "q_loss"
    if name == "multistep":
        critic = IQLCritic(spec, norm)
        return MultiStepImprover(
            GaussianActor(spec, norm), critic, MultiStepConfig(lr=1e-3, awr_weight=0.0)
        ), "loss"
    if name == "multistep-awr":
        critic = IQLCritic(spec, norm)
        return MultiStepImprover(
            GaussianActor(spec, norm), critic, MultiStepConfig(lr=1e-3, awr_weight=1.0)
        ), "awr_loss"
    if name == "ppo":
        return PPO(
            GaussianActor(spec, norm),
            ValueNet(spec, norm),
            PPOConfig(critic_warmup=0, critic_lr=1e-3, value_clip=10.0),
            compile=compile,
        ), "value_loss"
    if name == "sac":
        return SAC(spec, norm, SACConfig(lr=1e-3)), "q_loss"
    if name == "sac-ibrl":
        return SAC(
            spec, norm, SACConfig(lr=1e-3, bootstrap=True), prior=GaussianActor(spec, norm)
        ), "q_loss"
    raise AssertionError(name)


def _ppo_batch(algo, batch):
    with torch.no_grad():
        d = algo.actor.dist(batch["obs"])
        a = d.sample()
        return {"obs": batch["obs"], "action": a, "logp": d.log_prob(a), "adv": batch["reward"] - batch["reward"].mean(),
                "ret": batch["reward"] * 10, "v_old": torch.zeros_like(batch["reward"])}  # fmt: skip


ALGOS = ["bc", "bc-ensemble", "iql", "multistep", "multistep-awr", "ppo", "sac", "sac-ibrl"]


@pytest.mark.parametrize("name", ALGOS)
def test_every_algorithm_updates_and_fits_a_fixed_batch(tiny_cache, name):
    algo, key = _make(name, tiny_cache)
    assert isinstance(algo.schedule, UpdateSchedule) and isinstance(algo.data, DataKind)
    batch = OfflineSource(tiny_cache, seed=0).sample(128)
    if name == "ppo":
        batch = _ppo_batch(algo, batch)
    first = algo.update(batch)
    assert all(np.isfinite(v) for v in first.values()), first
    losses = [algo.update(batch)[key] for _ in range(150)]
    first, last = np.mean(losses[:20]), np.mean(losses[-20:])
    assert last < first - 0.05 * abs(first) - 1e-4, (losses[:3], losses[-3:])
    state = algo.state_dict()
    fresh, _ = _make(name, tiny_cache)
    fresh.load_state_dict(copy.deepcopy(state))  # the checkpoint contract


def test_ibrl_takes_whichever_proposal_the_critics_value_more(tiny_cache):
    spec, batch = _spec(tiny_cache), OfflineSource(tiny_cache, seed=0).sample(64)
    norm = _norm(tiny_cache, spec)
    torch.manual_seed(0)
    prior = GaussianActor(spec, norm)
    sac = SAC(spec, norm, SACConfig(bootstrap=True), prior=prior)
    obs, a_rl = batch["obs"], torch.rand(64, spec.action_dim) * 2 - 1
    with torch.no_grad():
        a_il = prior.mode(obs)
        prefer_il = sac.q(obs, a_il).min(0).values > sac.q(obs, a_rl).min(0).values
    assert prefer_il.any() and (~prefer_il).any()  # random critics: both cases occur
    chosen = sac.choose(obs, a_rl)
    assert torch.equal(chosen[prefer_il], a_il[prefer_il])
    assert torch.equal(chosen[~prefer_il], a_rl[~prefer_il])
    # the TD target bootstraps from the better proposal: never below the plain SAC target
    plain = SAC(spec, norm, SACConfig(bootstrap=False), prior=prior)
    plain.load_state_dict(sac.state_dict())
    alpha = sac.log_alpha.exp()
    torch.manual_seed(1)
    boot = sac.td_target(batch, alpha)
    torch.manual_seed(1)
    base = plain.td_target(batch, alpha)
    assert plain.prior is None and torch.equal(plain.choose(obs, a_rl), a_rl)
    assert (boot >= base).all() and (boot > base).any()


def test_ppo_value_and_actor_passes_in_two_threads_equal_one_after_the_other(tiny_cache):
    nets = {}
    for parallel in (False, True):
        algo, _ = _make("ppo", tiny_cache)
        source = OfflineSource(tiny_cache, seed=0)
        mbs = [_ppo_batch(algo, source.sample(64)) for _ in range(6)]
        metrics = algo.fit(mbs, parallel=parallel)
        assert {"value_loss", "policy_loss"} <= metrics.keys()
        nets[parallel] = [p.detach().clone() for p in (*algo.actor.parameters(), *algo.value.parameters())]  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(nets[False], nets[True], strict=True))
    algo, _ = _make("ppo", tiny_cache)
    moved = [p.detach().clone() for p in algo.actor.parameters()]
    algo.rollouts, algo.config = 0, PPOConfig(critic_warmup=1)
    assert "policy_loss" not in algo.fit(mbs, parallel=True)  # warm-up: V only
    assert all(torch.equal(a, b) for a, b in zip(moved, algo.actor.parameters(), strict=True))


@pytest.mark.slow
def test_compiled_ppo_in_two_threads_takes_the_eager_steps(tiny_cache):
    """Each thread compiles and runs its own step graph (actor / value) on first use."""
    nets = {}
    for compile in (False, True):
        algo, _ = _make("ppo", tiny_cache, compile=compile)
        source = OfflineSource(tiny_cache, seed=0)
        mbs = [_ppo_batch(algo, source.sample(64)) for _ in range(5)] + [_ppo_batch(algo, source.sample(40))]  # fmt: skip
        algo.fit(mbs, parallel=compile)  # the last, smaller minibatch: a second graph
        algo.fit(mbs, parallel=compile)
        nets[compile] = [p.detach().clone() for p in (*algo.actor.parameters(), *algo.value.parameters())]  # fmt: skip
    for a, b in zip(nets[False], nets[True], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_bc_ensemble_diversity_term_pushes_members_apart():
    logps = torch.tensor([[-1.0, -2.0], [-1.5, -0.5], [-3.0, -3.0]], requires_grad=True)
    plain, _ = bc_loss(logps, diversity=0.0)
    (g_plain,) = torch.autograd.grad(plain, logps)
    div, m = bc_loss(logps, diversity=0.1)
    (g_div,) = torch.autograd.grad(div, logps)
    assert "diversity" in m
    # member 2 is nobody's closest rival: only its own likelihood term acts on it
    assert torch.allclose(g_div[2], g_plain[2] * 1.1)
    # where member 1 is member 0's closest rival (sample 0), its likelihood is pushed down less
    assert g_div[1, 0] > g_plain[1, 0] * 1.1


def test_expectile_weights_positive_errors_more():
    d = torch.tensor([1.0, -1.0])
    assert expectile_loss(d[:1], 0.9) > expectile_loss(d[1:], 0.9)
    assert expectile_loss(d[:1], 0.5) == expectile_loss(d[1:], 0.5)


def test_ppo_clip_loss_ignores_gains_beyond_the_clip():
    adv = torch.tensor([1.0])
    near, _ = ppo_clip_loss(torch.tensor([0.01]), torch.tensor([0.0]), adv, 0.2)
    far, m = ppo_clip_loss(torch.tensor([1.0]), torch.tensor([0.0]), adv, 0.2)
    assert far.item() == pytest.approx(-1.2) and near.item() == pytest.approx(-np.exp(0.01))
    assert m["clip_frac"] == 1.0


def test_awr_loss_pulls_towards_the_higher_advantage_action_and_caps_weights():
    a = torch.tensor([-1.0, 1.0])  # two dataset actions at one state; the second is better
    adv = torch.tensor([-1.0, 1.0])
    mu = torch.zeros((), requires_grad=True)
    loss, _ = awr_loss(-0.5 * (a - mu) ** 2, adv, beta=1.0, max_weight=100.0)
    loss.backward()
    assert mu.grad < 0  # a gradient step moves the mean towards the better action
    w = np.exp(np.array([-1.0, 1.0]) / np.std([-1.0, 1.0], ddof=1))
    assert loss.item() == pytest.approx((w * 0.5).sum() / w.sum())
    _, capped = awr_loss(torch.zeros(2), torch.tensor([0.0, 100.0]), beta=10.0, max_weight=20.0)
    assert capped["awr_weight_max"] == 20.0
    # equal advantages: plain maximum likelihood of the dataset actions
    flat, _ = awr_loss(torch.tensor([-1.0, -3.0]), torch.tensor([2.0, 2.0]), beta=1.0, max_weight=100.0)  # fmt: skip
    assert flat.item() == pytest.approx(2.0)


def test_the_awr_term_moves_the_improvement_towards_good_dataset_actions(tiny_cache):
    """With the critic saying the dataset's actions are better than pi_old's, only the AWR
    term pulls the candidate's mean towards them (PPO sees pi_old's own samples only)."""
    spec, batch = _spec(tiny_cache), OfflineSource(tiny_cache, seed=0).sample(128)
    norm = _norm(tiny_cache, spec)
    torch.manual_seed(0)
    actor, critic = GaussianActor(spec, norm), IQLCritic(spec, norm)
    dist = {}
    for w in (0.0, 1.0):
        imp = MultiStepImprover(actor, critic, MultiStepConfig(lr=3e-3, awr_weight=w))
        with torch.no_grad():
            before = (imp.actor.mode(batch["obs"]) - batch["action"]).pow(2).mean()
        for _ in range(100):
            imp.update(batch)
        with torch.no_grad():
            dist[w] = (imp.actor.mode(batch["obs"]) - batch["action"]).pow(2).mean() / before
    assert dist[1.0] < 0.5 < dist[0.0]


def test_the_improvement_loss_is_the_clip_term_plus_the_weighted_awr_term(tiny_cache):
    """`losses` shares one actor pass and one V(s) between its two terms: the same figure as
    computing each term on its own, from the critic's advantages and pi_old's samples."""
    spec, batch = _spec(tiny_cache), OfflineSource(tiny_cache, seed=0).sample(64)
    norm = _norm(tiny_cache, spec)
    torch.manual_seed(0)
    cfg = MultiStepConfig(awr_weight=0.3, awr_beta=2.0)
    imp = MultiStepImprover(GaussianActor(spec, norm), IQLCritic(spec, norm), cfg)
    obs, action, noise = batch["obs"], batch["action"], torch.randn_like(batch["action"])
    got, metrics = imp.losses(obs, action, noise, *imp.fixed(obs, action))
    with torch.no_grad():
        d_old = imp.accepted.dist(obs)
        a = d_old.mean + d_old.std * noise
        adv = imp.critic.advantage(obs, a)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        clip, _ = ppo_clip_loss(imp.actor.log_prob(obs, a), d_old.log_prob(a), adv, cfg.clip)
        awr, _ = awr_loss(imp.actor.log_prob(obs, action), imp.critic.advantage(obs, action), 2.0, cfg.awr_max_weight)  # fmt: skip
    assert got.item() == pytest.approx((clip + 0.3 * awr).item(), rel=1e-5)
    assert metrics["awr_loss"].item() == pytest.approx(awr.item(), rel=1e-5)


def test_the_improvement_looks_up_per_row_what_it_would_compute_per_batch(tiny_cache):
    """Given the snapshot's rows, V(s), Q(s, a_data) and pi_old's mean come from tables made
    once (pi_old's again after each acceptance): the same steps as computing them per batch."""
    spec, src = _spec(tiny_cache), OfflineSource(tiny_cache, seed=0)
    norm = _norm(tiny_cache, spec)
    torch.manual_seed(0)
    actor, critic = GaussianActor(spec, norm), IQLCritic(spec, norm)
    for _ in range(20):  # a critic that is not at its initialisation
        critic.update(src.sample(64))
    cfg = MultiStepConfig(lr=3e-3, awr_weight=0.5)
    looked_up = MultiStepImprover(actor, critic, cfg, rows=src)
    computed = MultiStepImprover(actor, critic, cfg)
    for step in range(12):
        batch = src.sample(64)
        assert batch["row"].max() < tiny_cache.num_steps
        got = {}
        for name, imp in (("looked_up", looked_up), ("computed", computed)):
            torch.manual_seed(step)  # the same noise for both
            got[name] = imp.update(batch)
            if step in (3, 7):
                imp.accept()
        assert got["looked_up"] == pytest.approx(got["computed"], rel=1e-4, abs=1e-6)
    for a, b in zip(looked_up.actor.parameters(), computed.actor.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert looked_up._old_mean is not None and len(looked_up._old_mean) == tiny_cache.num_steps
    fresh = torch.cat([looked_up.accepted.dist(c["obs"]).mean for c in src.in_order(chunk=50)])
    torch.testing.assert_close(looked_up._old_mean, fresh)  # the last acceptance's pi_old


def test_the_improvement_refuses_rows_of_another_snapshot(tiny_cache):
    """Rows numbered by another snapshot would look up other transitions' values: refused."""
    spec, src = _spec(tiny_cache), OfflineSource(tiny_cache, seed=0)
    norm = _norm(tiny_cache, spec)
    imp = MultiStepImprover(GaussianActor(spec, norm), IQLCritic(spec, norm), rows=src)
    batch = src.sample(64)
    imp.update(batch)  # its own rows: fine
    for other in (batch["row"].roll(1), batch["row"] + tiny_cache.num_steps):
        with pytest.raises(ValueError, match="not from this improver's snapshot"):
            imp.update({**batch, "row": other})


def test_the_improvement_refuses_a_squashed_actor(tiny_cache):
    spec = _spec(tiny_cache)
    squashed = PolicySpec(obs_shapes=spec.obs_shapes, action_dim=spec.action_dim, hidden=(64, 64), squash=True)  # fmt: skip
    norm = _norm(tiny_cache, squashed)
    with pytest.raises(ValueError, match="unsquashed"):
        MultiStepImprover(GaussianActor(squashed, norm), IQLCritic(spec, norm))


def test_bad_awr_settings_are_refused():
    for bad in ({"awr_weight": -1.0}, {"awr_beta": 0.0}, {"awr_max_weight": float("nan")}):
        with pytest.raises(ValueError, match="awr"):
            MultiStepConfig(**bad)


def test_finishing_is_worth_more_than_hovering_short_of_success():
    """The trap absorbing success removes: 3.5 a step until the time limit vs success at step 20."""
    gamma, limit = 0.99, 80
    hover = sum(3.5 * gamma**t for t in range(limit))
    steps = torch.tensor([1.0] * 19 + [8.5])  # reach/grasp on the way, then the success step
    done = torch.tensor([0.0] * 19 + [1.0])
    r = absorbing_reward(steps, done, gamma)
    assert torch.equal(r[:19], steps[:19]) and r[19].item() == pytest.approx(850.0)
    finish = sum(float(x) * gamma**t for t, x in enumerate(r))
    plain = sum(float(x) * gamma**t for t, x in enumerate(steps))
    assert plain < hover < finish
    assert torch.equal(absorbing_reward(steps, done, gamma, enabled=False), steps)


def test_gae_matches_hand_computation():
    r = torch.tensor([[1.0], [1.0]])
    v = torch.tensor([[0.5], [0.5]])
    nv = torch.tensor([[0.5], [2.0]])
    done = torch.tensor([[0.0], [1.0]])
    adv, ret = gae(r, v, nv, done, gamma=0.9, lam=0.5)
    d1 = 1.0 - 0.5  # terminal: no bootstrap
    d0 = 1.0 + 0.9 * 0.5 - 0.5
    assert adv[1, 0].item() == pytest.approx(d1)
    assert adv[0, 0].item() == pytest.approx(d0 + 0.9 * 0.5 * d1)
    assert torch.allclose(ret, adv + v)


def test_gae_is_bitwise_the_step_by_step_torch_recursion():
    """`gae` runs its recursion in NumPy for speed; the figures are torch's own, op for op."""
    g = torch.Generator().manual_seed(0)
    r, v, nv = (torch.randn(64, 4, generator=g) for _ in range(3))
    done = (torch.rand(64, 4, generator=g) < 0.1).float()
    want, last = torch.zeros_like(r), torch.zeros(4)
    for t in reversed(range(64)):
        not_done = 1.0 - done[t]
        delta = r[t] + 0.99 * nv[t] * not_done - v[t]
        last = delta + 0.99 * 0.95 * not_done * last
        want[t] = last
    adv, ret = gae(r, v, nv, done, gamma=0.99, lam=0.95)
    assert adv.dtype == torch.float32 and torch.equal(adv, want) and torch.equal(ret, want + v)


def _sim(wins: list[int], returns: list[float] | None = None) -> dict[str, list[float]]:
    return {"success": [float(w) for w in wins], "return": returns or [float(w) for w in wins]}


def _gate(ope: float, cand: dict, acc: dict, **z: float) -> GateDecision:
    d = GateDecision(generation=1, step=100, ope_candidate=ope, ope_accepted=1.0)
    return decide(sim_evidence(d, cand, acc), 0.05, **z)


def test_gate_rejects_a_worse_generation_and_accepts_a_better_one():
    old = _sim([1, 1, 1, 0, 0, 0, 1, 0, 1, 0] * 3)  # 15 of 30
    worse = _gate(0.9, _sim([1, 0, 1, 0, 0, 0, 0, 0, 1, 0] * 3), old)
    assert not worse.accepted and "OPE" in worse.reason and "sim success gain" in worse.reason
    small = decide(GateDecision(generation=2, step=200, ope_candidate=1.02, ope_accepted=1.0), 0.05)
    assert not small.accepted  # within the margin: OPE is right only ~80% of the time
    better = _gate(1.2, _sim([1, 1, 1, 1, 0, 1, 1, 0, 1, 1] * 3), old)  # 24 of 30, losing none
    assert (
        better.accepted
        and better.sim_gain == pytest.approx(0.3)
        and better.sim_gain_on == "success"
    )


def test_where_rollouts_vote_ope_need_only_not_fall():
    """Two margins in a row refuse more true gains than either: with rollouts, their z-test is
    the margin and OPE must only hold; without, OPE's 5% stands (the test above)."""
    old = _sim([1, 1, 1, 0, 0, 0, 1, 0, 1, 0] * 3)
    better = _sim([1, 1, 1, 1, 0, 1, 1, 0, 1, 1] * 3)
    assert _gate(1.02, better, old).accepted  # +2% OPE: within RL-100's 5%, but rollouts agree
    fell = _gate(0.99, better, old)
    assert not fell.accepted and "OPE 0.99 < 1" in fell.reason
    assert not _gate(1.02, better, old, margin_with_sim=0.05).accepted
    with pytest.raises(ValueError, match="NaN"):
        MultiStepConfig(margin_with_sim=float("nan"))


def test_gate_wants_a_sim_gain_beyond_its_noise():
    old = _sim([1, 0] * 50)
    # won on one more seed of 100, lost on none: a higher rate, but a coin could do it
    one = _gate(1.2, _sim([1, 0] * 49 + [1, 1]), old)
    assert not one.accepted and "standard error" in one.reason
    assert _gate(1.2, _sim([1, 0] * 49 + [1, 1]), old, z=0.0).accepted  # z=0: any rise
    # won on three, lost on none: (3 - 0) / sqrt(3) = 1.73 standard errors
    assert _gate(1.2, _sim([1, 0] * 47 + [1, 1] * 3), old).accepted
    # other seeds succeed at the same rate: no gain
    assert not _gate(1.2, _sim([0, 1] * 50), old).accepted


def test_gate_lets_return_decide_where_success_says_nothing():
    never = [0] * 10
    higher = _gate(1.2, _sim(never, [float(r) for r in range(20, 30)]), _sim(never, [float(r) for r in range(10)]))  # fmt: skip
    assert (
        higher.accepted and higher.sim_gain_on == "return" and higher.sim_gain == pytest.approx(20)
    )
    lower = _gate(1.2, _sim(never, [1.0] * 10), _sim(never, [2.0] * 10))
    assert not lower.accepted and "sim return gain" in lower.reason


def test_paired_gain_needs_the_same_seeds():
    assert paired_gain([1, 1, 0], [0, 1, 0]) == pytest.approx((1 / 3, np.std([1, 0, 0], ddof=1) / np.sqrt(3)))  # fmt: skip
    with pytest.raises(ValueError, match="same seeds"):
        paired_gain([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="at least 2"):
        MultiStepConfig(sim_episodes=1)
    with pytest.raises(ValueError, match="sim_z"):
        MultiStepConfig(sim_z=float("nan"))


def test_mixed_source_takes_half_from_each(tiny_cache):
    off = OfflineSource(tiny_cache, seed=0)
    rep = ReplaySource(capacity=100)
    b = off.sample(10)
    rep.add({k: v.numpy() for k, v in b["obs"].items()}, np.full((10, 4), 7.0, np.float32), np.zeros(10, np.float32),
            {k: v.numpy() for k, v in b["next_obs"].items()}, np.zeros(10, np.float32))  # fmt: skip
    mixed = MixedSource(off, rep).sample(64)
    assert mixed["action"].shape == (64, 4)
    assert int((mixed["action"] == 7.0).all(-1).sum()) == 32


def test_offline_source_draws_the_corpus_samplers_transitions(tiny_cache):
    """The training source gathers from tensors of the cache; its batches are the numpy
    sampler's, row for row (same seed, same rows, same values)."""
    from flywheel.corpus import TransitionSampler

    ours = OfflineSource(tiny_cache, seed=5).sample(300)
    ref = TransitionSampler(tiny_cache, batch_size=300, seed=5).sample()
    for part in ("obs", "next_obs"):
        assert set(ours[part]) == set(ref[part])
        for k in ref[part]:
            np.testing.assert_array_equal(
                ours[part][k].numpy(), np.asarray(ref[part][k], np.float32)
            )
    for k in ("action", "reward", "done", "truncated"):
        np.testing.assert_array_equal(ours[k].numpy(), np.asarray(ref[k], np.float32))


def test_a_nan_gate_margin_is_refused():
    """NaN would make the OPE check pass for every candidate, silently ungating the run."""
    with pytest.raises(ValueError, match="margin is NaN"):
        MultiStepConfig(margin=float("nan"))
    assert MultiStepConfig(margin=float("-inf")).margin == float("-inf")  # ungated on purpose
