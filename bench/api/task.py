"""The task interface: all the engine and the tools know of a task (classification,
generation, restoration). A task is a folder of ``bench/tasks/`` whose ``__init__``
registers one `Task`; the runner scores a unit with ``TASKS.get(method.task).score``,
``bench perf`` times ``infer`` on ``random_data``, and the leaderboards, paper tables and
figures ask the task what a floor, a degenerate seed and its own sections are. So a new
task adds its folder (its Method base class, scoring, floors, report sections) and a
suite file, and edits nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.api.method import RunContext, Scored
from bench.api.record import Record
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
    #: the test metrics a no-learning row of this task's tables gives a floor
    floored_metrics: ClassVar[tuple[str, ...]] = ()
    #: the metrics a comparison reads first: a sweep's default objective (the first), the
    #: fp32-vs-bf16 check of a leaderboard, a table's summary column
    key_metrics: ClassVar[tuple[str, ...]] = ()
    #: registered methods whose own records are a table's floors (training-free), not results
    floor_methods: ClassVar[tuple[str, ...]] = ()
    #: a leaderboard's words for a method row with a degenerate seed (see `degenerate`)
    degenerate_label: ClassVar[str] = "degenerate"
    #: a paper table's words for such seeds ("2 of 3 <...>")
    degenerate_seeds: ClassVar[str] = "seeds are degenerate"
    #: whether `figures` draws anything (`bench plots`)
    draws_figures: ClassVar[bool] = False

    def score(self, method, bundle, ctx: RunContext, run: ScoringRun) -> Scored:
        """Run the trained `method` on the val and test splits of `bundle` and score it."""
        raise NotImplementedError

    def infer(self, method, split, ctx: RunContext) -> Any:
        """The task's inference verb on one split (what ``bench perf`` times)."""
        raise NotImplementedError

    def check_outputs(self, outputs: Any, split, spec, method_name: str) -> np.ndarray:
        """`outputs` of ``infer`` on `split` as an array, or a TrainingError naming the
        method and what is wrong (shape, dtype, non-finite values, probabilities)."""
        raise NotImplementedError

    def random_data(
        self, size: int, channels: int, classes: int, n: int, rng: np.random.Generator, source: str
    ):
        """(spec, split) of `n` random images in the task's format (``bench perf``)."""
        raise NotImplementedError

    # ------------------------------------------------------------ reports (bench/tools)

    def degenerate(self, record: Record) -> str:
        """Why a record's model is no result whatever its scores ('' when it is one)."""
        return ""

    def split_floors(self, records: list[Record]) -> dict[str, dict[str, float]]:
        """The no-learning rows of a table of `records` (one dataset): {row: metrics}."""
        return {}

    def table_detail(self, record: Record) -> str:
        """What a table's subtitle says of its data besides n and hashes."""
        return f"{len(record.class_names or [])} classes"

    def table_floors(self, records, table, metrics, methods, floors, ranked):
        """A hook to turn some methods of a table into its floors: returns (cells, method
        rows, floor rows); by default as they came."""
        return ranked, methods, floors

    def verdict(self, records, frame, rows, reference, with_priors=True) -> list[str]:
        """Markdown lines opening a leaderboard table: the answer to its question, each
        method row (a variant label of `frame`'s ``variant`` column) against the table's
        `reference` (and, `with_priors`, against its own prior), with its uncertainty."""
        return []

    def other_size_verdict(
        self, records, frame, rows, base_records, base_frame, base_rows, base
    ) -> list[str]:
        """Markdown lines after a table whose dataset holds dataset `base`'s images at
        another size (same split hash, other pixels): each method row (`rows`) against the
        same row of `base`'s table (`base_rows`)."""
        return []

    def table_extras(self, records, methods, metrics) -> list[str]:
        """Markdown lines after a leaderboard table (rows and sections of the task's own)."""
        return []

    def leaderboard_sections(self, summary, reference) -> list[str]:
        """Markdown sections after all of a leaderboard's tables."""
        return []

    def header_notes(self, records, n_flagged: int, n_one_class: int) -> list[str]:
        """A leaderboard header's lines on this task's floors and flags."""
        return []

    def figures(self, records: list[Record], out_dir: Path) -> list[Path]:
        """`bench plots`: the task's figures of `records` into `out_dir` (see `draws_figures`)."""
        return []


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
