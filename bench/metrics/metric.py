"""What a metric is, for every table and line that shows one: its direction, how many
decimals it is shown with, whether it is ranked, whether a finished unit's line names it,
the tasks it belongs to, and its place in a table. Registered by name (``METRICS``) by
the module that defines it, so no generic layer needs to know a metric's name."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning

from bench.api.registry import METRICS

SINGLE_LABEL = ("binary", "multiclass", "ordinal")
ALL_TASKS = SINGLE_LABEL + ("multilabel",)
#: tables list classification metrics, then generation's, then restoration's (each group
#: in the order its module registers them)
GROUPS = {"generation": 1, "restoration": 2}
_registered = itertools.count()


@dataclass(frozen=True)
class Metric:
    name: str
    #: (labels, probabilities, task) -> value; None for a metric its task computes from
    #: images or features (`computed_by` says where)
    fn: Callable[[np.ndarray, np.ndarray, str], float] | None
    higher_is_better: bool
    tasks: tuple[str, ...]
    description: str
    decimals: int = 3  # as tables show it
    ranked: bool = True  # False: a spread or a ratio best at 1 (in the CSV, not ranked)
    headline: bool = False  # named in the line a finished unit prints
    computed_by: str = ""
    order: tuple[int, int] = (0, 0)  # place in a table (`table_order`)

    def __call__(self, labels: np.ndarray, probs: np.ndarray, task: str) -> float:
        if self.fn is None:
            raise TypeError(
                f"metric {self.name} is computed from images, not probabilities: {self.computed_by}"
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=UndefinedMetricWarning)
                value = float(
                    self.fn(np.asarray(labels), np.asarray(probs, dtype=np.float64), task)
                )
        except ValueError as exc:  # sklearn raises for some undefined cases
            value, why = float("nan"), str(exc)
        else:
            why = "e.g. only one class present"
        if np.isnan(value):
            warnings.warn(
                f"metric {self.name} is undefined here ({why}); reporting NaN", stacklevel=2
            )
        return value

    def fmt(self, value: float) -> str:
        return f"{value:.{self.decimals}f}"


def register_metric(
    name: str,
    description: str,
    fn: Callable | None = None,
    *,
    higher_is_better: bool = True,
    tasks: tuple[str, ...] = ALL_TASKS,
    decimals: int = 3,
    ranked: bool = True,
    headline: bool = False,
    computed_by: str = "",
) -> Metric:
    group = next((rank for task, rank in GROUPS.items() if task in tasks), 0)
    m = Metric(
        name, fn, higher_is_better, tuple(tasks), description, decimals, ranked, headline,
        computed_by, (group, next(_registered)),
    )  # fmt: skip
    return METRICS.add(name, m, description)


def metric(name: str, description: str, **meta):
    """Decorator: register `fn(labels, probs, task)` as metric `name` (see `register_metric`)."""

    def wrap(fn):
        return register_metric(name, description, fn, **meta)

    return wrap


def table_order(names) -> list[str]:
    """`names` in table order: registered metrics by their place, then others by name."""
    known = {n: METRICS.get(n).order for n in names if n in METRICS.names()}
    return sorted(known, key=known.get) + sorted(set(names) - set(known))


def ranked_metrics(names) -> list[str]:
    """The metrics of `names` a table ranks, in table order."""
    return [n for n in table_order(names) if n not in METRICS.names() or METRICS.get(n).ranked]


def headline_metrics(names) -> list[str]:
    return [n for n in table_order(names) if n in METRICS.names() and METRICS.get(n).headline]
