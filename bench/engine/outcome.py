"""What running a unit came to, for the run's summary (`bench run`, SLURM tasks, sweeps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


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

    def line(self, shown: tuple[str, ...]) -> str:
        """One line of the run's progress, with the `shown` test metrics it has."""
        if self.status is UnitStatus.FAILED:
            return f"  FAILED {self.unit}: {self.error}"
        if self.status is not UnitStatus.OK:
            return f"  {self.unit}: {self.status.value}"
        values = [f"{k} {self.test[k]:.3f}" for k in shown if self.test.get(k) is not None]
        return f"  ok {self.unit}: test {', '.join(values) or 'n/a'} ({self.wall_s:.0f}s)"
