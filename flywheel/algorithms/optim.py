"""Adam over one flat buffer: the optimiser step of a small network in a few tensor ops.

Why: on the 2-core CPUs this runs on, `torch.optim.Adam(fused=True)` spent about 60 us on
the arithmetic of a [256, 256] actor's step and about 300 us in Python around it (grouping
tensors by device and dtype, per-tensor state, step counters), and gradient-norm clipping
loops over the tensors once more. Small-batch RL takes thousands of such steps, one to three
per update, and in PPO's two-thread update that Python also holds the GIL the other thread
needs. `FlatAdam` keeps the parameters as views into one flat tensor and gathers their
gradients into another with one `cat`, so the gradient, clipping and the Adam step are each one
or two ops on the whole network (`python -m benchmarks.learning --only offline_speed,online_speed`).

The update itself is PyTorch's own fused Adam / AdamW kernel (`torch.optim.adam.adam`, the
functional form of `torch.optim.Adam`), so the numbers match torch's optimiser (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.adam import adam as adam_update

Metrics = dict[str, torch.Tensor]
LossFn = Callable[..., tuple[torch.Tensor, Metrics]]
"""A pure loss: tensors in, (loss, metrics as tensors) out."""


@dataclass(frozen=True)
class AdamSettings:
    """Adam's settings beside the learning rate: one set of defaults for both engines, so a
    checkpoint moves between eager and compiled steps of the same configuration."""

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False
    """AdamW: weight decay applied to the weights, not added to the gradient."""

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)


class FlatAdam:
    """Adam (or AdamW with `decoupled`) over `params`, which it re-points into one buffer.

    Every parameter's `.data` becomes a view of the flat buffer. `backward(loss)` computes the
    gradients of these parameters only (`torch.autograd.grad`: nothing accumulates in `.grad`,
    and networks the loss passes through without being optimised here get no weight
    gradients) and writes them into the flat gradient with one `cat`. Moving the networks to
    another device replaces the parameters' storage, so call `relink` after `module.to`
    (`to_device` does). `lr` may be changed between steps (a schedule sets it).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        **adam: Any,
    ) -> None:
        """`adam`: the fields of `AdamSettings`."""
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("FlatAdam needs at least one parameter that requires grad")
        s = AdamSettings(**adam)
        self.lr, self.betas, self.eps = lr, s.betas, s.eps
        self.weight_decay, self.decoupled = s.weight_decay, s.decoupled
        self.steps = 0
        self.relink()

    def relink(self) -> None:
        """(Re)build the flat buffers from the parameters' current values and device."""
        old = getattr(self, "flat", None)
        device = self.params[0].device
        with torch.no_grad():
            self.flat = torch.cat([p.detach().reshape(-1).to(device) for p in self.params])
        self.grad = torch.zeros_like(self.flat)
        offset = 0
        for p in self.params:
            n = p.numel()
            p.data = self.flat[offset : offset + n].view_as(p)
            offset += n
        if old is None:
            self.exp_avg = torch.zeros_like(self.flat)
            self.exp_avg_sq = torch.zeros_like(self.flat)
        else:  # moved: carry the moments over
            self.exp_avg, self.exp_avg_sq = self.exp_avg.to(device), self.exp_avg_sq.to(device)
        self._step = torch.tensor(float(self.steps), device=device)

    def backward(self, loss: torch.Tensor) -> None:
        """The gradient of `loss` with respect to this optimiser's parameters, into `grad`."""
        grads = torch.autograd.grad(loss, self.params, allow_unused=True, materialize_grads=True)
        torch.cat([g.reshape(-1) for g in grads], out=self.grad)

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Scale the gradient to norm at most `max_norm` (as `clip_grad_norm_`); the norm before."""
        norm = self.grad.norm()
        self.grad.mul_((max_norm / (norm + 1e-6)).clamp(max=1.0))
        return norm

    def step(self) -> None:
        adam_update(
            [self.flat],
            [self.grad],
            [self.exp_avg],
            [self.exp_avg_sq],
            [],
            [self._step],
            foreach=False,
            capturable=False,
            differentiable=False,
            fused=True,
            grad_scale=None,
            found_inf=None,
            has_complex=False,
            amsgrad=False,
            beta1=self.betas[0],
            beta2=self.betas[1],
            lr=self.lr,
            weight_decay=self.weight_decay,
            eps=self.eps,
            maximize=False,
            decoupled_weight_decay=self.decoupled,
        )
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "lr": self.lr,
            "exp_avg": self.exp_avg.clone(),
            "exp_avg_sq": self.exp_avg_sq.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_adam_state(state, self.flat.numel())
        self.steps, self.lr = int(state["steps"]), float(state["lr"])
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self._step.fill_(float(self.steps))


def gradient_step(opt: FlatAdam, loss: torch.Tensor, max_norm: float | None = None) -> None:
    """One gradient step on `loss`, with the gradient norm clipped to `max_norm` if given."""
    opt.backward(loss)
    if max_norm is not None:
        opt.clip_grad_norm_(max_norm)
    opt.step()


def check_adam_state(state: dict[str, Any], numel: int) -> None:
    """Refuse an optimiser checkpoint that is not ours or not for these parameters."""
    if "exp_avg" not in state:  # torch.optim's layout: a checkpoint from before FlatAdam
        raise ValueError("optimiser state in torch.optim's format, written by an older flywheel: delete the run's checkpoint to start it again")  # fmt: skip
    if state["exp_avg"].numel() != numel:
        raise ValueError(f"optimiser state for {state['exp_avg'].numel()} parameters, this one has {numel}")  # fmt: skip


class Step(Protocol):
    """One optimisation step of some modules on a loss: what every algorithm's update calls.

    `step(*args)` runs `loss_fn(*args) -> (loss, metrics)`, takes the gradient of the trained
    modules' parameters only (networks the loss merely passes through get none), clips its
    norm, applies Adam and then `after()` (e.g. target-network averaging); it returns the loss
    and metrics as tensors. `lr` may be changed between steps (a schedule sets it).
    """

    lr: float
    steps: int

    def __call__(self, *args: Any) -> tuple[torch.Tensor, Metrics]: ...
    def relink(self) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class EagerStep(FlatAdam):
    """The step op by op: the loss, then `FlatAdam` on the modules' parameters."""

    def __init__(
        self,
        loss_fn: LossFn,
        modules: Sequence[nn.Module],
        lr: float,
        *,
        max_norm: float | None = None,
        after: Callable[[], None] | None = None,
        **adam: Any,
    ) -> None:
        super().__init__([p for m in modules for p in m.parameters()], lr, **adam)
        self.loss_fn, self.max_norm, self.after = loss_fn, max_norm, after

    def __call__(self, *args: Any) -> tuple[torch.Tensor, Metrics]:
        loss, metrics = self.loss_fn(*args)
        gradient_step(self, loss, self.max_norm)
        if self.after is not None:
            with torch.no_grad():
                self.after()
        return loss.detach(), metrics


def adam_step(
    loss_fn: LossFn,
    modules: Sequence[nn.Module],
    lr: float,
    *,
    compile: bool = False,
    max_norm: float | None = None,
    after: Callable[[], None] | None = None,
    **adam: Any,
) -> Step:
    """An Adam `Step` of `modules` on `loss_fn`: eager, or one compiled graph (`fused.py`)."""
    if not compile:
        return EagerStep(loss_fn, modules, lr, max_norm=max_norm, after=after, **adam)
    from flywheel.algorithms.fused import FusedStep  # torch.func and Dynamo only when asked

    return FusedStep(loss_fn, modules, lr, max_norm=max_norm, after=after, **adam)
