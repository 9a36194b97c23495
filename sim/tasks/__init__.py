"""Task registry: name -> (task class, default config factory)."""

from __future__ import annotations

from collections.abc import Callable

from sim.tasks import drawer, lift, pick_place, push, reach
from sim.tasks.base import Task, TaskConfig

TASKS: dict[str, tuple[type[Task], Callable[[], TaskConfig]]] = {
    "reach": (reach.Reach, reach.default_config),
    "push": (push.Push, push.default_config),
    "lift": (lift.Lift, lift.default_config),
    "pick_place": (pick_place.PickPlace, pick_place.default_config),
    "drawer": (drawer.Drawer, drawer.default_config),
}
"""Every task, by name."""


def make_task(name: str, config: TaskConfig | None = None) -> Task:
    """Instantiate task `name` with `config` (default: the task's default_config())."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    cls, default = TASKS[name]
    return cls(config or default())


def default_config(name: str) -> TaskConfig:
    """The default config of task `name`."""
    return TASKS[name][1]()
