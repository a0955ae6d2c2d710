"""How every table shows a number: mean ± std, ⚠ for no result, **best** and <u>second</u>
by the value as shown (ties share a rank; one distinct value ranks nothing; a flagged
cell, a degenerate method's or a prior's is never ranked), and significance marks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.api.registry import METRICS
from bench.report.floors import at_or_below
from bench.report.stats import MARK_LEVELS, MIN_SEEDS_FOR_TEST, paired_ttest, significance_mark


def escaped(mark: str) -> str:
    """A significance mark's asterisks escaped for Markdown: after a bold cell
    `**0.8 ± 0.1**\\*\\*`, where `**0.8 ± 0.1****` would read as broken emphasis."""
    return mark.replace("*", "\\*")


def md_mark(p: float) -> str:
    """The significance mark of `p` as a Markdown cell shows it."""
    return escaped(significance_mark(p))


MARKS_LEGEND = ", ".join(f"{escaped(mark)} p < {level}" for level, mark in MARK_LEVELS)


def ranks_by_shown_value(shown: dict, higher_is_better: bool) -> dict:
    """The rank (0 = best) of each key by its shown value: ties share a rank, and a single
    distinct value ranks nothing (an empty mapping)."""
    distinct = sorted(set(shown.values()), reverse=higher_is_better)
    return {k: distinct.index(v) for k, v in shown.items()} if len(distinct) > 1 else {}


def emphasise(text: str, rank: int | None) -> str:
    """Bold the best, underline the second."""
    return f"**{text}**" if rank == 0 else (f"<u>{text}</u>" if rank == 1 else text)


def ranked_cells(
    table: pd.DataFrame, metric: str, floor: float | None = None
) -> tuple[dict[str, str], int]:
    """Each method's cell for `metric`, and how many are flagged: a mean at or below the
    metric's floor is marked ⚠; such a cell, and any of a method with a seed predicting
    one class, is never bold or underlined."""
    rows = table[table["metric"] == metric].set_index("method")
    higher = METRICS.get(metric).higher_is_better
    flagged = {m for m, r in rows.iterrows() if at_or_below(r["mean"], floor, higher)}
    rankable = rows.loc[  # labels, not a boolean list: an empty list would select columns
        [
            m
            for m, r in rows.iterrows()
            if m not in flagged and not r["one_class_seeds"] and not r["is_prior"]
        ]
    ]
    ranks = ranks_by_shown_value(
        {m: round(v, 3) for m, v in rankable["mean"].dropna().items()}, higher
    )
    cells = {}
    for method, r in rows.iterrows():
        if not np.isfinite(r["mean"]):
            cells[method] = "n/a"
            continue
        text = f"{r['mean']:.3f} ± {r['std']:.3f}" if np.isfinite(r["std"]) else f"{r['mean']:.3f}"
        text = f"{text} ⚠" if method in flagged else emphasise(text, ranks.get(method))
        cells[method] = text + md_mark(r["p_value"])
    return cells, len(flagged)


def best_floor(values: dict[str, float], higher_is_better: bool) -> float | None:
    """The best of the floors' finite means in the metric's direction (None without one)."""
    finite = [v for v in values.values() if np.isfinite(v)]
    return (max(finite) if higher_is_better else min(finite)) if finite else None


def fmt_value(v: float, metric: str, scale: float = 1.0) -> str:
    """`v` with the metric's decimals; a scaled value (a percentage) with 2."""
    return f"{v * scale:.2f}" if scale != 1.0 else METRICS.get(metric).fmt(v)


def mark_against(cell, ref) -> str:
    """The significance mark of `cell` (a `Cell`) against `ref` over their matched seeds."""
    if cell is None or ref is None or cell is ref:
        return ""
    common = sorted(set(cell.by_seed) & set(ref.by_seed))
    if len(common) < MIN_SEEDS_FOR_TEST:
        return ""
    return md_mark(
        paired_ttest(
            np.array([cell.by_seed[s] for s in common]), np.array([ref.by_seed[s] for s in common])
        )
    )
