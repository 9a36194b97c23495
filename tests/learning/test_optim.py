"""FlatAdam: the same updates as torch's Adam / AdamW with gradient clipping, in one buffer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from flywheel.algorithms.optim import FlatAdam, gradient_step


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
