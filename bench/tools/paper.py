"""`bench paper` and `bench reproduce`: the papers' tables regenerated from our records,
in the papers' layouts, with the papers' reported numbers (``bench/papers/<key>.yaml``,
data, not code) beside ours.

Each table names the suite whose records fill it, the metrics, and for every paper
dataset the dataset we ran instead (named in the table; ``null`` where we have none).
Our cells are mean ± std over seeds of the test metric, from ``--preset``, else the
table's own ``preset:`` (so that a paper's tables come from one preset), else the preset
with the most records for that dataset (ties: ``full``; the preset is named), best in bold and
second underlined among our methods, with paired t-test marks over matched seeds
against the table's reference (*** p < 0.01, ** p < 0.05, * p < 0.1). Sweep tables
(DiffMIC-v2 Table V, Fig. 4) read the trial records of ``bench sweep``. Tables without
any record of ours say so instead of being left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.api.errors import BenchError
from bench.api.method import budget_identity
from bench.api.record import Record
from bench.api.registry import METHODS, METRICS, TASKS
from bench.engine.config import load_suite
from bench.engine.records import load_records, read_record
from bench.report.aggregate import PAPER_FEATURE_SPACE, our_cells, pick_preset
from bench.report.cells import (
    best_floor,
    emphasise,
    fmt_value,
    mark_against,
    ranks_by_shown_value,
)
from bench.report.floors import at_or_below, metric_floors

PAPERS_DIR = Path(__file__).parents[1] / "papers"


def paper_keys() -> dict[str, Path]:
    return {yaml.safe_load(p.read_text())["key"]: p for p in sorted(PAPERS_DIR.glob("*.yaml"))}


def load_paper(key: str) -> dict[str, Any]:
    keys = paper_keys()
    if key not in keys:
        import difflib

        close = difflib.get_close_matches(key, list(keys), n=1)
        raise BenchError(
            f"unknown paper {key!r}"
            + (f"; did you mean {close[0]!r}?" if close else "")
            + f" (papers: {sorted(keys)})"
        )
    paper = yaml.safe_load(keys[key].read_text())
    check_rows(paper, keys[key])
    return paper


ROW_KEYS = {"label", "ours", "ours_note", "paper"}
DATASET_KEYS = {"paper", "ours", "note"}


def check_rows(paper: dict, path: Path) -> None:
    """Every table row and dataset has only known keys: an unquoted comma inside a YAML
    flow mapping ({label: a (b, c), ...}) ends the label and makes a key of the rest."""
    for table in paper["tables"]:
        for kind, known, entries in (
            ("row", ROW_KEYS, table.get("rows", [])),
            ("dataset", DATASET_KEYS, table.get("datasets", [])),
        ):
            for entry in entries:
                unknown = set(entry) - known
                if unknown:
                    raise BenchError(
                        f"{path.name}, table {table['id']}: {kind} {entry.get('label') or entry.get('paper')!r} "
                        f"has unknown keys {sorted(map(str, unknown))} (known: {sorted(known)}); "
                        "quote a label that holds a comma"
                    )


def render_comparison(
    table: dict, records: list[Record], preset: str | None, task
) -> tuple[list[str], list[dict]]:
    """A methods x metrics table per paper dataset; returns markdown lines and the
    (paper, ours) pairs for `reproduce`."""

    metrics = table["metrics"]
    scale = float(table.get("scale", 1.0))
    lines, pairs = [], []
    for ds in table["datasets"]:
        paper_ds, ours_ds = ds["paper"], ds.get("ours")
        lines += [
            "",
            f"### {paper_ds}"
            + (
                f" (ours: {ours_ds})"
                if ours_ds
                else " (no equivalent dataset here: paper numbers only)"
            ),
        ]
        if ds.get("note"):
            lines += ["", f"_{ds['note']}._"]
        methods = {r.get("ours") for r in table["rows"]}
        chosen = pick_preset(  # --preset, else the table's own (one preset across a paper)
            [r for r in records if r.dataset == ours_ds and r.method in methods],
            preset or table.get("preset"),
        )
        if ours_ds and chosen:
            lines += [
                "",
                f"Ours: suite `{table['suite']}`, preset `{chosen}`, reference `{table.get('reference')}`.",
            ]
        cells = {}  # by row position: labels repeat (Table III's "+ Syn" rows)
        for i, row in enumerate(table["rows"]):
            for label, metric in metrics.items():
                cells[(i, label)] = (
                    our_cells(records, ours_ds, row["ours"], metric, chosen, task)
                    if ours_ds and row.get("ours")
                    else None
                )
        if ours_ds and not any(cells.values()):
            lines += [
                "",
                f"_No run of ours yet for this table on {ours_ds} (suite `{table['suite']}`)._",
            ]
        ref_index = next(
            (i for i, r in enumerate(table["rows"]) if r.get("ours") == table.get("reference")),
            None,
        )
        floor_rows = {i for i, r in enumerate(table["rows"]) if r.get("ours") in task.floor_methods}
        ranks = {}
        for label, metric in metrics.items():
            higher = METRICS.get(metric).higher_is_better
            flag_below_floor_rows(cells, label, metric, floor_rows, higher)
            present = {
                i: float(fmt_value(c.mean, metric, scale))
                for i in range(len(table["rows"]))
                if (c := cells[(i, label)]) is not None and not c.flagged and i not in floor_rows
            }
            ranks[label] = ranks_by_shown_value(present, higher)
        grid = []
        for i, row in enumerate(table["rows"]):
            paper_vals = (row.get("paper") or {}).get(paper_ds)
            ours_name = (
                row["ours"] + (f": {row['ours_note']}" if row.get("ours_note") else "")
                if row.get("ours")
                else None
            )
            out = [
                row["label"]
                + (f" ({ours_name})" if ours_name and row["ours"] not in row["label"] else "")
            ]
            for j, (label, metric) in enumerate(metrics.items()):
                p = paper_vals[j] if paper_vals else None
                c = cells[(i, label)]
                out.append("—" if p is None else f"{p:g}")
                if c is None:
                    out.append("not run" if row.get("ours") and ours_ds else "—")
                else:
                    ref = cells.get((ref_index, label)) if ref_index is not None else None
                    text = fmt_value(c.mean, metric, scale) + (
                        f" ± {fmt_value(c.std, metric, scale)}" if np.isfinite(c.std) else ""
                    )
                    if i in floor_rows:  # a floor: never ranked, nothing to test
                        out.append(f"_{text}_")
                        continue
                    text = emphasise(text, ranks[label].get(i))
                    out.append(text + (" ⚠" if c.flagged else "") + mark_against(c, ref))
                    if p is not None:
                        pairs.append(
                            {
                                "table": table["id"],
                                "paper_dataset": paper_ds,
                                "dataset": ours_ds,
                                "method": row["label"],
                                "metric": label,
                                "paper": p,
                                "ours": c.mean * scale,
                                "n_seeds": len(c.by_seed),
                                "tolerance": _tolerance(table, metric, scale),
                                "same_dataset": ours_ds == paper_ds,
                                "flag": c.flag,
                                "feature_space": c.feature_space,
                            }
                        )
            grid.append(out)
        header = ["method"] + [
            f"{label} {who}" for label in metrics for who in ("(paper)", "(ours)")
        ]
        if (
            table.get("orientation") == "methods_as_columns"
        ):  # as printed in the paper: methods across
            header, grid = (
                ["metric"] + [g[0] for g in grid],
                [[header[i + 1]] + [g[i + 1] for g in grid] for i in range(len(header) - 1)],
            )
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
            "| " + " | ".join(r) + " |" for r in grid
        ]
    return lines, pairs


def flag_below_floor_rows(cells: dict, label: str, metric: str, floor_rows: set, higher: bool):
    """Flag the cells of column `label` that do not beat the best of the table's floor
    rows (the task's training-free methods, e.g. non-local means), as a leaderboard does."""
    floors = {i: cells[(i, label)].mean for i in floor_rows if cells.get((i, label))}
    floor = best_floor(floors, higher)
    for (i, col), c in cells.items():
        if col == label and c is not None and i not in floor_rows and not c.flagged:
            if at_or_below(c.mean, floor, higher):
                c.flag = f"does not beat the best training-free floor's {metric} ({floor:.3f})"


def _tolerance(table: dict, metric: str, scale: float) -> float:
    tol = table.get("tolerance", 0.03)
    tol = tol.get(metric, 0.03) if isinstance(tol, dict) else tol
    return float(tol) * scale


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
        base = _without(trials[0], field)
        same_but_field = [r for r in suite_records if _without(r, field) == base]
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


def _without(record: Record, field: str) -> str:
    """What defines a record's unit but `field`: preset, budget, precision, the rest of its config."""
    return json.dumps(
        {
            "preset": record.preset,
            "budget": budget_identity(record.budget),
            "precision": record.precision,
            "config": {k: v for k, v in record.config.items() if k != field},
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
            best = max(ranked) if len(ranked) > 1 else None
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


def build_paper(
    key: str,
    table_id: str | None = None,
    results_dir="results",
    preset: str | None = None,
    out_dir: Path | None = None,
) -> tuple[str, list[dict]]:
    """The markdown of a paper's tables (or one table) and the (paper, ours) pairs."""
    paper = load_paper(key)
    tables = [t for t in paper["tables"] if table_id is None or str(t["id"]) == str(table_id)]
    if not tables:
        raise BenchError(
            f"{key} has no table {table_id!r} (tables: {[t['id'] for t in paper['tables']]})"
        )
    lines = [
        f"# {paper['paper']}",
        "",
        f"_Generated by `bench paper {key}` from the records in `{results_dir}/` and the paper's "
        f"reported numbers in `bench/papers/`; do not edit by hand. Ours: test split, mean ± std over seeds; "
        "**best** / <u>second</u> among ours; marks: paired t-test vs the table's reference on 3 or more matched "
        "seeds, not corrected for multiple comparisons (*** p < 0.01, ** p < 0.05, * p < 0.1); ⚠: no result "
        "(at or below the metric's floor, or degenerate seeds), never bold; cells in italics: training-free floors, never ranked._",
    ]
    pairs = []
    for t in tables:
        lines += ["", f"## Table {t['id']}: {t['title']}"]
        if t.get("kind") == "sweep":
            lines += render_sweep(t, Path(results_dir), out_dir)
            continue
        records = load_records(Path(results_dir), t["suite"], status="ok")
        task = TASKS.get(load_suite(t["suite"]).task)
        body, table_pairs = render_comparison(t, records, preset, task)
        lines += body
        pairs += table_pairs
    return "\n".join(lines) + "\n", pairs


def write_paper(
    key: str,
    table_id: str | None = None,
    results_dir="results",
    preset: str | None = None,
    out_dir="leaderboards",
) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text, _ = build_paper(key, table_id, results_dir, preset, out)
    path = out / (f"paper-{key}.md" if table_id is None else f"paper-{key}-table-{table_id}.md")
    path.write_text(text)
    return path


def reproduce(key: str, results_dir="results", preset: str | None = None) -> list[dict]:
    """Each (paper, ours) number pair with its verdict: reproduces (|ours - paper| <=
    tolerance on the paper's own dataset), within tolerance on a stand-in dataset (not
    a reproduction), or not."""
    _, pairs = build_paper(key, None, results_dir, preset, None)
    for p in pairs:
        close = abs(p["ours"] - p["paper"]) <= p["tolerance"]
        p["verdict"] = (
            ("reproduces" if close else "does not reproduce")
            if p["same_dataset"]
            else ("within tolerance, other dataset" if close else "differs, other dataset")
        )
        if p["flag"]:  # no learning, no verdict
            p["verdict"] = f"no verdict: ours is no result ({p['flag']})"
        elif p.get("feature_space") and p["feature_space"] != PAPER_FEATURE_SPACE:
            p["verdict"] = (
                f"no verdict: ours is measured in the {p['feature_space']} feature space, the paper's in "
                "Inception-v3's; distances in two feature spaces do not compare"
            )
    return pairs
