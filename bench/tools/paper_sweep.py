"""Sweep tables of `bench paper` (DiffMIC-v2 Table V, Fig. 4): our test metrics per value
of a swept parameter, read from the trial records of `bench sweep` in the studies that
varied it alone (one factor at a time, as the papers' tables), beside the paper's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.api.method import budget_identity
from bench.api.record import Record
from bench.api.registry import METHODS, METRICS, TASKS
from bench.engine.records import load_records, read_record
from bench.report.floors import at_or_below, metric_floors


def sweep_records(results_dir: Path, method: str, dataset: str) -> list[Record]:
    paths = sorted((Path(results_dir) / "sweeps").rglob("seed*.json"))
    records = [read_record(path)[0] for path in paths]
    return [r for r in records if r and r.ok and r.method == method and r.dataset == dataset]


def one_factor_groups(
    records: list[Record], field: str, suite_records: list[Record] = ()
) -> dict[Any, list[Record]]:
    """Records by their value of `field`, from the studies (records sharing a sweep
    name) in which `field` is the only config field that varies: one factor at a time,
    as the papers' tables, so another parameter's sweep does not leak in at its default.
    A study's point left out of its grid (the preset's own value, already run by
    `bench run`) is filled from `suite_records`: the suite's records of the same preset,
    budget and precision whose config equals the study's but for `field`, one per seed
    not already there."""
    studies: dict[str, list[Record]] = {}
    for r in records:
        studies.setdefault(r.suite, []).append(r)
    groups: dict[Any, list[Record]] = {}
    for trials in studies.values():
        fields = set().union(*(r.config for r in trials))
        varying = {
            f
            for f in fields
            if len({json.dumps(r.config.get(f), sort_keys=True) for r in trials}) > 1
        }
        base = without_fields(trials[0], field)
        same_but_field = [r for r in suite_records if without_fields(r, field) == base]
        one_value = not varying and any(
            r.config.get(field) != trials[0].config.get(field) for r in same_but_field
        )  # a one-point study beside the preset's own value still varies `field` alone
        if varying != {field} and not one_value:
            continue
        for r in trials:
            groups.setdefault(r.config[field], []).append(r)
        for r in same_but_field:
            group = groups.setdefault(r.config.get(field), [])
            if all(g.seed != r.seed for g in group):
                group.append(r)
    return groups


def without_fields(record: Record, *fields: str) -> str:
    """What defines a record's unit but `fields`: preset, budget, precision, the rest of its config."""
    return json.dumps(
        {
            "preset": record.preset,
            "budget": budget_identity(record.budget),
            "precision": record.precision,
            "config": {k: v for k, v in record.config.items() if k not in fields},
        },
        sort_keys=True,
    )


def _from_suite(records: list[Record]) -> bool:
    return any("sweeps" not in r.path.parts for r in records)


def render_sweep(table: dict, results_dir: Path, out_dir: Path | None) -> list[str]:
    """Our test metrics per value of each swept parameter (means over the trials with
    that value, in studies that varied it alone), beside the paper's; a plot for figure tables."""
    metrics = table["metrics"]
    ds = table["datasets"][0]
    records = sweep_records(results_dir, table["method"], ds["ours"])
    suite_records = [
        r
        for r in load_records(results_dir, table["suite"])
        if r.method == table["method"] and r.dataset == ds["ours"]
    ]
    task = TASKS.get(METHODS.get(table["method"]).cls.task)
    floors = metric_floors(task.split_floors(records), task.floored_metrics) if records else {}
    lines = [
        "",
        f"_{ds.get('note', '')}. Ours: test metrics of `bench sweep {table['method']}` trial records of the studies "
        "that varied the parameter alone (mean over trials sharing the value); ⚠: at or below the metric's floor "
        "on the test split (majority class, chance) or a trial predicting one class: no result, never bold; "
        "**best** among the values with 2 or more trials; "
        f"†: the value a study left out of its grid, from the `{table['suite']}` suite's own records of the same "
        "preset and config (`bench run`)._",
    ]
    for param in table["parameters"]:
        groups = one_factor_groups(records, param["field"], suite_records)
        values = sorted(set(groups) | set(param.get("paper") or {}), key=lambda v: (v is None, v))
        if param.get("not_run"):  # a value range the budget cannot reach, and why
            lines += ["", f"_{param['name']}: {param['not_run']}_"]
        elif not groups:
            lines += [
                "",
                f"_No sweep of {param['name']} alone for {table['method']} on {ds['ours']} yet "
                f"(`bench sweep {table['method']} --dataset {ds['ours']} --params ...`)._",
            ]
        if not values:  # neither the paper (a plot only) nor a sweep gives a value
            continue
        header = [param["name"]] + [str(v) for v in values]
        rows = []
        for j, (label, metric) in enumerate(metrics.items()):
            paper_row, ours_row = [f"{label} (paper)"], [f"{label} (ours)"]
            ours_means = {
                v: float(np.mean([r.metric("test", metric) for r in groups[v]]))
                for v in values
                if v in groups
            }
            flagged = {
                v
                for v, m in ours_means.items()
                if at_or_below(m, floors.get(metric), METRICS.get(metric).higher_is_better)
                or any(task.degenerate(r) for r in groups[v])
            }
            # a single trial is not a finding: bold only among values with 2 or more
            ranked = [m for v, m in ours_means.items() if v not in flagged and len(groups[v]) > 1]
            better = max if METRICS.get(metric).higher_is_better else min
            best = better(ranked) if len(ranked) > 1 else None
            for v in values:
                p = (param.get("paper") or {}).get(v)
                paper_row.append("—" if p is None else f"{p[j]:g}")
                m = ours_means.get(v)
                cell = (
                    "—"
                    if m is None
                    else ("⚠ " if v in flagged else "")
                    + (f"**{m:.3f}**" if m == best else f"{m:.3f}")
                )
                ours_row.append(
                    cell
                    if m is None
                    else cell + f" (n={len(groups[v])}{'†' if _from_suite(groups[v]) else ''})"
                )
            rows += [paper_row, ours_row]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
            "| " + " | ".join(r) + " |" for r in rows
        ]
        if table.get("plot") and groups and out_dir is not None:
            lines += [
                "",
                f"![{table['id']}]({_plot_sweep(table, param, groups, metrics, out_dir).name})",
            ]
    return lines


def _plot_sweep(table: dict, param: dict, groups: dict, metrics: dict, out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = sorted(v for v in groups if v is not None)
    fig, ax = plt.subplots(figsize=(5, 3))
    records = [r for x in xs for r in groups[x]]
    task = TASKS.get(METHODS.get(table["method"]).cls.task)
    floors = metric_floors(task.split_floors(records), task.floored_metrics) if records else {}
    for label, metric in metrics.items():
        (line,) = ax.plot(
            xs,
            [np.mean([r.metric("test", metric) for r in groups[x]]) for x in xs],
            marker="o",
            label=label,
        )
        if floors.get(metric) is not None:
            ax.axhline(
                floors[metric],
                color=line.get_color(),
                linestyle=":",
                linewidth=1,
                label=f"{label} floor",
            )
    ax.set_xlabel(param["name"])
    ax.set_ylabel("test metric")
    ax.set_title(f"{table['method']}: {param['name']} ({table['id']})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(out_dir) / f"paper-{table['method']}-{table['id']}-{param['name']}.png".replace(
        "/", "-"
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
