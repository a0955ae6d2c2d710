"""Floors in general: a metric's floor is the best score of the no-learning rows of a
table (which rows, and which metrics have a floor, is the task's: ``task.split_floors``,
``task.floored_metrics``); a number at or below it, as shown (3 decimals), is no result."""

from __future__ import annotations

import numpy as np

from bench.api.record import Record
from bench.api.registry import METRICS


def metric_floors(rows: dict[str, dict[str, float]], floored) -> dict[str, float]:
    """The floor of each `floored` metric: the best no-learning value in its direction."""
    out: dict[str, float] = {}
    for values in rows.values():
        for k, v in values.items():
            if k not in floored or v is None or not np.isfinite(v):
                continue
            better = max if METRICS.get(k).higher_is_better else min
            out[k] = better(out.get(k, v), v)
    return out


def at_or_below(value: float, floor: float | None, higher_is_better: bool = True) -> bool:
    """True when `value`, as a table shows it (3 decimals), does not beat `floor`."""
    if floor is None or not np.isfinite(value):
        return False
    return (
        round(value, 3) <= round(floor, 3)
        if higher_is_better
        else round(value, 3) >= round(floor, 3)
    )


def record_flag(record: Record, metric: str, task) -> str:
    """Why one record's test `metric` is no result, or '' when it is one: at or below the
    metric's floor on its test split, or a degenerate model (the task says which)."""
    value = record.metric("test", metric)
    floor = metric_floors(task.split_floors([record]), task.floored_metrics).get(metric)
    higher = METRICS.get(metric).higher_is_better
    if value is not None and at_or_below(float(value), floor, higher):
        return f"test {metric} {float(value):.3f} at or {'below' if higher else 'above'} its floor {floor:.3f}"
    return task.degenerate(record)
