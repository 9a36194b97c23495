"""The quality benchmark's audit of the multi-step gate against the evaluation seeds."""

from __future__ import annotations

import math

import pytest

from benchmarks.learning_quality import gain_ci95, gate_decision_agreement, ope_rank_agreement
from flywheel.evaluation import EvalResult


def _gen(n: int, ope: float, true: float, accepted: bool = False) -> dict:
    key = "ope_accepted" if n == 0 else "ope_candidate"
    return {"generation": n, key: ope, "true_success": true, "accepted": accepted}


def test_ope_rank_agreement_counts_pairs_whose_true_success_differs():
    gens = [_gen(0, 10.0, 0.5), _gen(1, 12.0, 0.6), _gen(2, 14.0, 0.4), _gen(3, 15.0, 0.4)]
    # pairs with different truth: (1,0) agree, (2,0) disagree, (2,1) disagree, (3,0) disagree,
    # (3,1) disagree; (3,2) is a tie in truth and not counted
    assert ope_rank_agreement(gens) == 1 / 5
    assert ope_rank_agreement([_gen(0, 1.0, 0.5), _gen(1, 2.0, 0.5)]) is None


def test_gate_decision_agreement_compares_each_decision_with_the_pi_old_it_faced():
    gens = [
        _gen(0, 0, 0.5),
        _gen(1, 0, 0.6, accepted=True),  # right: 0.6 > 0.5; pi_old is now at 0.6
        _gen(2, 0, 0.55, accepted=True),  # wrong: 0.55 < 0.6 (but pi_old is now at 0.55)
        _gen(3, 0, 0.58),  # wrong: 0.58 > 0.55 was rejected
        _gen(4, 0, 0.55),  # right: a tie is no improvement
    ]
    assert gate_decision_agreement(gens) == 2 / 4
    # all right only when judged against the pi_old in force (vs the start: 1/3, vs the
    # previous generation: 2/3)
    chain = [_gen(0, 0, 0.5), _gen(1, 0, 0.6, accepted=True), _gen(2, 0, 0.55), _gen(3, 0, 0.58)]
    assert gate_decision_agreement(chain) == 1.0
    assert gate_decision_agreement(gens[:1]) is None and gate_decision_agreement([]) is None


def _result(wins: list[bool], seeds: list[int] | None = None) -> EvalResult:
    n = len(wins)
    return EvalResult(n, sum(wins) / n, 0.0, (0.0, 1.0), 0, successes=wins, seeds=seeds or list(range(n)))  # fmt: skip


def test_gain_ci95_is_the_mean_per_seed_difference_with_its_interval():
    a = _result([True, True, False, True])
    b = _result([False, True, False, False])
    gain, half = gain_ci95(a, b)
    assert gain == 0.5  # differences 1, 0, 0, 1
    assert math.isclose(half, 1.96 * math.sqrt(1 / 3) / 2)  # sample std of (1,0,0,1) is sqrt(1/3)
    # the same wins on every seed: no gain and no doubt about it
    assert gain_ci95(a, a) == (0.0, 0.0)
    with pytest.raises(ValueError, match="same seeds"):
        gain_ci95(a, _result([True] * 4, seeds=[4, 5, 6, 7]))
