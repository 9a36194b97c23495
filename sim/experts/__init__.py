"""Scripted experts, one per task, by task name."""

from __future__ import annotations

from sim.experts.base import DEFAULT_NOISE, BatchExpert, Expert, ExpertNoise
from sim.experts.drawer import DrawerExpert
from sim.experts.lift import LiftExpert
from sim.experts.pick_place import PickPlaceExpert
from sim.experts.push import PushExpert
from sim.experts.reach import ReachExpert

EXPERTS: dict[str, type[Expert]] = {
    "reach": ReachExpert,
    "push": PushExpert,
    "lift": LiftExpert,
    "pick_place": PickPlaceExpert,
    "drawer": DrawerExpert,
}
"""Expert class per task name."""


def make_expert(task: str, noise: float = 0.0, seed: int | None = None) -> Expert:
    """The scripted expert for `task` at noise level `noise` in [0, 1]."""
    if task not in EXPERTS:
        raise KeyError(f"no expert for task {task!r}; known: {sorted(EXPERTS)}")
    return EXPERTS[task](noise, seed=seed)


__all__ = ["DEFAULT_NOISE", "EXPERTS", "BatchExpert", "Expert", "ExpertNoise", "make_expert"]
