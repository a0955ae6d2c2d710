"""Two-parameter grid tables of `bench paper` (ODM's ordinal weight x guidance scale,
issue 34): the test metrics of every grid point, read from `bench sweep --grid` trial
records of the method and of its baseline (the baseline's own sweep of the column
parameter, its row the baseline's fixed value of the row parameter); each method's point
chosen on the validation objective of the sweep, never on test; and the chosen points
compared by seed, with the interval of the difference."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.api.record import Record
from bench.api.registry import METHODS, METRICS, TASKS
from bench.report.floors import at_or_below, metric_floors
from bench.report.stats import paired_t_interval
from bench.tools.paper_sweep import sweep_records, without_fields

MIN_SEEDS = 2  # a point chosen on fewer seeds is one draw, not a finding


def value_of(record: Record, key: str) -> float | None:
    """A test metric by name, or a path into the record (``ordinal_consistency.generated.qwk``)."""
    if "." not in key:
        return record.metric("test", key)
    node: Any = record.payload
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return None if node is None else float(node)


def grid_cells(table: dict, results_dir: Path) -> tuple[dict[str, dict], int]:
    """{method: {(row value, column value): records}} for the table's method and baseline,
    from the trial records that share everything but the two swept fields (the most
    common such setting: a sweep at other options is not mixed in); and how many records
    were left out for another setting."""
    rows, cols = table["row_param"]["field"], table["column_param"]["field"]
    dataset = table["datasets"][0]["ours"]
    records = [
        r
        for m in (table["method"], table["baseline"])
        for r in sweep_records(results_dir, m, dataset)
        if r.preset == table["preset"]
    ]
    settings = Counter(without_fields(r, rows, cols) for r in records)
    if not settings:
        return {}, 0
    common = settings.most_common(1)[0][0]
    cells: dict[str, dict] = {}
    for r in records:
        if without_fields(r, rows, cols) == common:
            point = (r.config.get(rows), r.config.get(cols))
            cells.setdefault(r.method, {}).setdefault(point, []).append(r)
    return cells, len(records) - settings[common]


def chosen_point(points: dict[tuple, list[Record]], metric: str) -> tuple | None:
    """The point with the best mean validation `metric` among those with MIN_SEEDS seeds."""
    higher = METRICS.get(metric).higher_is_better
    scored = {
        p: np.mean([r.metric("val", metric) for r in rs])
        for p, rs in points.items()
        if len(rs) >= MIN_SEEDS and all(r.metric("val", metric) is not None for r in rs)
    }
    if not scored:
        return None
    return (max if higher else min)(scored, key=scored.get)


def render_grid(table: dict, results_dir: Path) -> list[str]:
    method, baseline, select = table["method"], table["baseline"], table["select"]
    ds = table["datasets"][0]
    cells, left_out = grid_cells(table, Path(results_dir))
    lines = [
        "",
        f"_{ds.get('note', '')}. {table.get('note', '')} Ours: test metrics of the `bench sweep "
        f"--grid` trial records of `{method}` and `{baseline}` (preset `{table['preset']}`), mean "
        f"over seeds (n); **bold**: each method's point chosen on validation {select} (mean over "
        f"{MIN_SEEDS} or more seeds), never on test; ⚠: at or below the metric's floor, or a "
        "degenerate generator: no result, never chosen._",
    ]
    if not cells.get(method):
        cmd = f"bench sweep {method} --dataset {ds['ours']} --suite {table['suite']} --preset {table['preset']} --grid"
        return lines + ["", f"_No grid sweep of {method} on {ds['ours']} yet (`{cmd} ...`)._"]
    if left_out:
        lines += ["", f"_{left_out} trial records at other options left out._"]
    task = TASKS.get(METHODS.get(method).cls.task)
    every = [r for points in cells.values() for rs in points.values() for r in rs]
    floors = metric_floors(task.split_floors(every), task.floored_metrics)

    def flagged(rs: list[Record]) -> bool:
        return any(task.degenerate(r) for r in rs) or any(
            at_or_below(v, floors[key], METRICS.get(key).higher_is_better)
            for r in rs
            for key in table["metrics"].values()
            if key in floors and (v := value_of(r, key)) is not None
        )

    flags = {(m, p): flagged(rs) for m, pts in cells.items() for p, rs in pts.items()}
    usable = {m: {p: rs for p, rs in pts.items() if not flags[m, p]} for m, pts in cells.items()}
    chosen = {m: chosen_point(usable.get(m, {}), select) for m in (method, baseline)}
    row_values = sorted({p[0] for pts in cells.values() for p in pts})
    col_values = sorted({p[1] for pts in cells.values() for p in pts})
    for label, key in table["metrics"].items():
        target = table.get("targets", {}).get(label)
        head = f"{table['row_param']['name']} \\ {table['column_param']['name']}"
        lines += [
            "",
            f"{label}" + (f" (target: {_target(every, target)})" if target else "") + ":",
            "",
            "| " + " | ".join([head] + [f"{c:g}" for c in col_values]) + " |",
            "|" + "---|" * (len(col_values) + 1),
        ]
        for m in (baseline, method):
            for rv in row_values:
                if not any(p[0] == rv for p in cells.get(m, {})):
                    continue
                row = [f"{m} ({rv:g})"]
                for cv in col_values:
                    rs = cells.get(m, {}).get((rv, cv), [])
                    vals = [v for r in rs if (v := value_of(r, key)) is not None]
                    if not vals:
                        row.append("—")
                        continue
                    cell = f"{np.mean(vals):.3f}"
                    if (rv, cv) == chosen[m]:
                        cell = f"**{cell}**"
                    row.append(("⚠ " if flags[m, (rv, cv)] else "") + f"{cell} (n={len(vals)})")
                lines.append("| " + " | ".join(row) + " |")
    return lines + ["", _verdict(table, cells, chosen)]


def _target(records: list[Record], path: str) -> str:
    vals = [v for r in records if (v := value_of(r, path)) is not None]
    return f"{np.mean(vals):.3f}" if vals else "—"


def _verdict(table: dict, cells: dict, chosen: dict) -> str:
    """The chosen points against each other on the test metric, paired by seed."""
    method, baseline, metric = table["method"], table["baseline"], table["select"]
    missing = [m for m in (method, baseline) if chosen[m] is None]
    if missing:
        return (
            f"_No comparison yet: no usable point of {' or '.join(missing)} with {MIN_SEEDS} or "
            "more seeds._"
        )
    a = {r.seed: r.metric("test", metric) for r in cells[method][chosen[method]]}
    b = {r.seed: r.metric("test", metric) for r in cells[baseline][chosen[baseline]]}
    seeds = sorted(set(a) & set(b))
    t = paired_t_interval([a[s] for s in seeds], [b[s] for s in seeds])
    higher = METRICS.get(metric).higher_is_better
    rf, cf = table["row_param"]["name"], table["column_param"]["name"]
    (mr, mc), (br, bc) = chosen[method], chosen[baseline]
    if not np.isfinite(t["ci_low"]):
        word = "too few matched seeds for an interval"
    elif t["ci_low"] > 0 or t["ci_high"] < 0:
        word = f"{method} {'better' if (t['difference'] > 0) == higher else 'worse'}"
    else:
        word = "no detectable difference"
    interval = (
        f"95 % t interval [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}], p = {t['p_value']:.3f}"
        if np.isfinite(t["ci_low"])
        else "no interval"
    )
    return (
        f"**Chosen on validation**: {method} at {rf} {mr:g}, {cf} {mc:g}; {baseline} at {rf} {br:g}, "
        f"{cf} {bc:g}. Test {metric}, {method} - {baseline} over {len(seeds)} matched seeds: "
        f"{t['difference']:+.3f} ({interval}; {'higher' if higher else 'lower'} is better): {word}."
    )
