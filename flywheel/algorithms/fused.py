"""A whole gradient step as one compiled graph: loss, gradient, clipping, Adam, target averaging.

Why: with `torch.compile` on the loss alone (what `Runtime.compile` did before), the IQL
critic + multi-step improvement step ran no faster than eager on this 2-core CPU (15.4 vs
15.6 ms): the backward pass, the gradient gather, clipping, Adam and the Polyak update stayed
op-by-op Python around the compiled forward. Traced whole, with the gradient from `torch.func`
(Dynamo cannot trace `torch.autograd.grad`), the same step took 11.3-11.7 ms, ~7 of them the
matmuls (docs/benchmarks.md, "Learning").

Two layouts were measured slower and are avoided here:
- parameters as views of one flat buffer (`FlatAdam`'s layout): the gradient of the flat
  tensor, or a `cat` of the per-tensor gradients, becomes one element-wise kernel with a chain
  of bounds checks per element (1.1-1.6 ms per step), and in-place writes into slices of it
  became masked scatter kernels (5 ms);
- random numbers drawn inside the graph (Inductor's `randn` ran 16-wide over 4 actions, 0.33 ms
  per step): callers draw noise outside and pass it in, which also keeps eager and compiled
  on the same random stream.

So the moments are one tensor per parameter, the learning rate and step count reach the graph
as a tensor of Adam's coefficients (a changed float would recompile), and the checkpoint format is `FlatAdam`'s, so a run
may resume with compilation switched on or off.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import CodeType, FunctionType, MethodType
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

from flywheel.algorithms.optim import AdamSettings, LossFn, Metrics, check_adam_state


class _Calls(nn.Module):
    """Holds the trained modules so `functional_call` can swap their parameters for a call of
    `fn`, which reaches them through its own references (`self.q`, ...)."""

    def __init__(self, fn: LossFn, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.fn = fn
        self.trained = nn.ModuleList(modules)

    def forward(self, *args: Any) -> tuple[torch.Tensor, Metrics]:
        return self.fn(*args)


def adam_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avg: list[torch.Tensor],
    exp_avg_sq: list[torch.Tensor],
    coef: torch.Tensor,
    *,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    decoupled: bool,
) -> None:
    """Adam / AdamW (Kingma & Ba 2015; Loshchilov & Hutter 2019) in place, as torch.optim's.

    `coef` = (lr / (1 - b1^t), sqrt(1 - b2^t), 1 - lr * weight_decay), computed by the caller:
    inside the graph, Inductor recomputed the two powers once per 16 elements of every tensor.
    """
    b1, b2 = betas
    step_size, bc2_sqrt, decay = coef.unbind()
    for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq, strict=True):
        if weight_decay and decoupled:
            p.mul_(decay)
        elif weight_decay:
            g = g + weight_decay * p
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        p.sub_(step_size * m / (v.sqrt() / bc2_sqrt + eps))


_STEP_CODE: dict[CodeType, FunctionType] = {}


def _whole_step_for(loss_fn: LossFn) -> FunctionType:
    """`FusedStep._whole_step` with its own code object for each loss function.

    Dynamo keeps the graphs it compiled for a function on its code object, at most 8 of them
    (`recompile_limit`), and runs the function eagerly beyond that, with only a warning. With
    one code object for every algorithm's step, a process that trains BC, IQL, the improvement
    and PPO, each with a batch size or two, would run out. Steps of the same loss share graphs:
    parameters are graph inputs, so a new learner of the same shape reuses them (tested)."""
    key = getattr(loss_fn, "__func__", loss_fn).__code__
    if key not in _STEP_CODE:
        f = FusedStep._whole_step
        _STEP_CODE[key] = FunctionType(f.__code__.replace(), f.__globals__, f.__name__, f.__defaults__, f.__closure__)  # fmt: skip
    return _STEP_CODE[key]


class FusedStep:
    """`EagerStep`'s contract (see `optim.py`), compiled on the first call into one graph."""

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
        self._calls = _Calls(loss_fn, modules)
        named = [(n, p) for n, p in self._calls.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("FusedStep needs at least one parameter that requires grad")
        self._names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.max_norm, self.after = max_norm, after
        self._adam = AdamSettings(**adam).as_kwargs()
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self._coef = torch.zeros(3, device=self.params[0].device)  # see `adam_`
        self.lr, self.steps = float(lr), 0
        step = MethodType(_whole_step_for(loss_fn), self)
        self._graph = torch.compile(step, dynamic=False, fullgraph=True)

    def _whole_step(self, *args: Any) -> tuple[torch.Tensor, Metrics]:
        def loss(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Metrics]:
            return functional_call(self._calls, params, args)

        grads, (value, metrics) = grad_and_value(loss, has_aux=True)(
            dict(zip(self._names, self.params, strict=True))
        )
        g = list(grads.values())
        with torch.no_grad():
            if self.max_norm is not None:  # as clip_grad_norm_: scale the whole gradient
                norm = torch.stack([x.pow(2).sum() for x in g]).sum().sqrt()
                scale = (self.max_norm / (norm + 1e-6)).clamp(max=1.0)
                g = [x * scale for x in g]
            adam_(self.params, g, self.exp_avg, self.exp_avg_sq, self._coef, **self._adam)
            if self.after is not None:
                self.after()
        return value.detach(), {k: v.detach() for k, v in metrics.items()}

    def __call__(self, *args: Any) -> tuple[torch.Tensor, Metrics]:
        (b1, b2), t = self._adam["betas"], self.steps + 1
        coef = (self.lr / (1 - b1**t), math.sqrt(1 - b2**t), 1 - self.lr * self._adam["weight_decay"])  # fmt: skip
        self._coef.copy_(torch.tensor(coef))  # a tensor input: a new value needs no recompile
        out = self._graph(*args)
        self.steps = t
        return out

    def relink(self) -> None:
        """After the modules moved device: the moments follow the parameters."""
        dev = self.params[0].device
        self.exp_avg = [m.to(dev) for m in self.exp_avg]
        self.exp_avg_sq = [v.to(dev) for v in self.exp_avg_sq]
        self._coef = self._coef.to(dev)

    def state_dict(self) -> dict[str, Any]:
        """`FlatAdam`'s format: moments flattened in parameter order."""
        flat = lambda xs: torch.cat([x.detach().reshape(-1) for x in xs])  # noqa: E731
        return {"steps": self.steps, "lr": self.lr, "exp_avg": flat(self.exp_avg), "exp_avg_sq": flat(self.exp_avg_sq)}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_adam_state(state, sum(p.numel() for p in self.params))
        with torch.no_grad():
            for mine, key in ((self.exp_avg, "exp_avg"), (self.exp_avg_sq, "exp_avg_sq")):
                pieces = state[key].to(mine[0].device).split([x.numel() for x in mine])
                for x, piece in zip(mine, pieces, strict=True):
                    x.copy_(piece.view_as(x))
        self.steps, self.lr = int(state["steps"]), float(state["lr"])
