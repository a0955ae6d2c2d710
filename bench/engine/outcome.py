"""What running a unit came to, for the run's summary (`bench run`, SLURM tasks, sweeps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from bench.api.registry import METRICS
from bench.metrics.metric import headline_metrics


class UnitStatus(str, Enum):
    OK = "ok"
    FAILED = "failed"
    COMPLETE = "complete (skipped)"  # its record was complete already
    ELSEWHERE = "running in another process (skipped)"  # another process holds its lock


@dataclass(frozen=True)
class Outcome:
    unit: str  # its label
    status: UnitStatus
    record: str  # the record's path
    error: str | None = None  # a failed unit's message
    test: dict[str, float | None] = field(default_factory=dict)  # its test metrics
    wall_s: float | None = None

    def line(self) -> str:
        """One line of the run's progress, with the headline test metrics it has."""
        if self.status is UnitStatus.FAILED:
            return f"  FAILED {self.unit}: {self.error}"
        if self.status is not UnitStatus.OK:
            return f"  {self.unit}: {self.status.value}"
        shown = headline_metrics(k for k, v in self.test.items() if v is not None)
        values = [f"{k} {METRICS.get(k).fmt(self.test[k])}" for k in shown]
        return f"  ok {self.unit}: test {', '.join(values) or 'n/a'} ({self.wall_s:.0f}s)"
