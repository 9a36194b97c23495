"""FlatAdam: the same updates as torch's Adam / AdamW with gradient clipping, in one buffer;
the compiled step (`FusedStep`): the same steps as the eager one, in one graph."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from flywheel.algorithms.base import soft_update
from flywheel.algorithms.optim import FlatAdam, adam_step, gradient_step


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2))


def _loss(net: nn.Module, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    x, y = torch.randn(32, 5, generator=g), torch.randn(32, 2, generator=g)
    return 10 * (net(x) - y).pow(2).mean()  # large enough that the clip bites


@pytest.mark.parametrize("decoupled", [False, True])
def test_flat_adam_takes_the_steps_torch_adam_takes(decoupled):
    ours, theirs = _net(), _net()
    opt = FlatAdam(ours.parameters(), 1e-2, eps=1e-5, weight_decay=0.1 if decoupled else 0.0, decoupled=decoupled)  # fmt: skip
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    ref = cls(theirs.parameters(), lr=1e-2, eps=1e-5, weight_decay=0.1 if decoupled else 0.0)
    for step in range(20):
        gradient_step(opt, _loss(ours, step), 0.5)
        ref.zero_grad()
        _loss(theirs, step).backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.5)
        ref.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the parameters are views into the flat buffer; nothing accumulates in .grad
    p = next(ours.parameters())
    assert p.data_ptr() == opt.flat.data_ptr() and p.grad is None


def test_state_round_trip_and_relink_after_a_move_continue_the_same_run():
    a, b = _net(), _net()
    opt_a, opt_b = FlatAdam(a.parameters(), 1e-2), FlatAdam(b.parameters(), 1e-2)
    for step in range(5):
        gradient_step(opt_a, _loss(a, step), 0.5)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    opt_b.load_state_dict(opt_a.state_dict())
    b.to(torch.float64).to(torch.float32)  # replaces the storage, as a device move does
    opt_b.relink()
    for step in range(5, 10):
        gradient_step(opt_a, _loss(a, step), 0.5)
        gradient_step(opt_b, _loss(b, step), 0.5)
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(x, y)
    with pytest.raises(ValueError, match="optimiser state for"):
        FlatAdam(nn.Linear(2, 2).parameters(), 1e-3).load_state_dict(opt_a.state_dict())
    old = torch.optim.Adam(a.parameters()).state_dict()  # a checkpoint from before FlatAdam
    with pytest.raises(ValueError, match="older flywheel"):
        opt_a.load_state_dict(old)


class _Learner:
    """A trained net, its Polyak target, and a net the loss passes through without training."""

    def __init__(self, *, compile: bool, decoupled: bool) -> None:
        self.net = _net()
        self.target = copy.deepcopy(self.net).requires_grad_(False)
        torch.manual_seed(1)
        self.through = nn.Linear(2, 2)  # requires grad, but is not the step's to train
        wd = {"weight_decay": 0.1, "decoupled": True} if decoupled else {}
        self.step = adam_step(self.loss, [self.net], 1e-2, compile=compile, max_norm=0.5, after=self.average, eps=1e-5, **wd)  # fmt: skip

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        out = self.through(self.net(x))
        return 10 * (out - y).pow(2).mean(), {"mean": out.detach().mean()}

    def average(self) -> None:
        soft_update(self.target, self.net, 0.1)

    def run(self, steps: range) -> list[float]:
        losses = []
        for step in steps:
            g = torch.Generator().manual_seed(step)
            if step == 4:
                self.step.lr = 5e-3  # a schedule changes it between steps
            loss, metrics = self.step(torch.randn(32, 5, generator=g), torch.randn(32, 2, generator=g))  # fmt: skip
            losses.append(float(loss))
            assert set(metrics) == {"mean"}
        return losses


@pytest.mark.parametrize("decoupled", [False, True])
def test_the_compiled_step_takes_the_eager_steps(decoupled):
    eager, fused = (_Learner(compile=c, decoupled=decoupled) for c in (False, True))
    through = copy.deepcopy(eager.through.state_dict())
    torch.testing.assert_close(eager.run(range(8)), fused.run(range(8)), rtol=1e-5, atol=1e-5)
    for a, b in [(eager.net, fused.net), (eager.target, fused.target)]:
        for x, y in zip(a.parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    for x, y in zip(through.values(), fused.through.parameters(), strict=True):
        assert torch.equal(x, y)  # the loss went through it; only `net` was trained
    assert fused.step.steps == eager.step.steps == 8 and fused.step.lr == pytest.approx(5e-3)


def test_a_run_resumes_from_either_step_into_the_other():
    """Eager and compiled checkpoints share one format: switching `compile` keeps the run."""
    ref = _Learner(compile=False, decoupled=False)
    ref.run(range(10))
    first = _Learner(compile=True, decoupled=False)
    first.run(range(5))
    second = _Learner(compile=False, decoupled=False)
    second.net.load_state_dict(first.net.state_dict())
    second.target.load_state_dict(first.target.state_dict())
    second.step.load_state_dict(first.step.state_dict())
    second.run(range(5, 10))
    for x, y in zip(ref.net.parameters(), second.net.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    back = _Learner(compile=True, decoupled=False)
    back.step.load_state_dict(second.step.state_dict())
    assert back.step.steps == 10
    with pytest.raises(ValueError, match="optimiser state for"):
        back.step.load_state_dict(FlatAdam(nn.Linear(2, 2).parameters(), 1e-3).state_dict())


def test_a_second_compiled_learner_trains_its_own_networks():
    """Learners of the same shape share compiled graphs (parameters are graph inputs)."""
    first = _Learner(compile=True, decoupled=False)
    first.run(range(3))
    kept = copy.deepcopy(first.net.state_dict())
    second, eager = (
        _Learner(compile=True, decoupled=False),
        _Learner(compile=False, decoupled=False),
    )
    torch.testing.assert_close(second.run(range(6)), eager.run(range(6)), rtol=1e-5, atol=1e-5)
    for k, v in first.net.state_dict().items():
        assert torch.equal(v, kept[k])
    for x, y in zip(second.target.parameters(), eager.target.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
