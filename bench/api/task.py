"""The task interface: all the engine and the tools know of a task (classification,
generation, restoration). A task is a folder of ``bench/tasks/`` whose ``__init__``
registers one `Task`; the runner scores a unit with ``TASKS.get(method.task).score``
and ``bench perf`` times ``infer`` on ``random_data``, so a new task adds its folder
(its Method base class, scoring, metrics) and a suite file, and edits nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from bench.api.method import RunContext, Scored
from bench.api.registry import TASKS


@dataclass
class ScoringRun:
    """What a task's scoring gets besides the trained method and its data."""

    method_name: str
    #: the suite's ``evaluation`` options at the unit's preset (e.g. generation's extractor)
    evaluation: dict[str, Any] = field(default_factory=dict)
    #: kept across the units of one suite run: what is built once per dataset (an extractor)
    shared: dict[Any, Any] = field(default_factory=dict)


class Task:
    """Base class of the registered tasks."""

    name: ClassVar[str] = ""

    def score(self, method, bundle, ctx: RunContext, run: ScoringRun) -> Scored:
        """Run the trained `method` on the val and test splits of `bundle` and score it."""
        raise NotImplementedError

    def infer(self, method, split, ctx: RunContext) -> Any:
        """The task's inference verb on one split (what ``bench perf`` times)."""
        raise NotImplementedError

    def random_data(
        self, size: int, channels: int, classes: int, n: int, rng: np.random.Generator, source: str
    ):
        """(spec, split) of `n` random images in the task's format (``bench perf``)."""
        raise NotImplementedError


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register one instance of a `Task` subclass under ``cls.name``."""
    TASKS.add(cls.name, cls(), cls.__doc__ or cls.name)
    return cls


def check_task(name: str, task: Any) -> None:
    from bench.api.errors import BenchError

    if not isinstance(task, Task) or task.name != name:
        raise BenchError(
            f"task {name!r} must be registered as an instance of a Task named {name!r}"
        )


TASKS.check = check_task
