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
(DiffMIC-v2 Table V, Fig. 4) and grid tables (ODM's weight x guidance) read the trial records
of ``bench sweep``. Tables without
any record of ours say so instead of being left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.api.errors import BenchError
from bench.api.record import Record
from bench.api.registry import METRICS, TASKS
from bench.engine.config import load_suite
from bench.engine.records import load_records
from bench.report.aggregate import PAPER_FEATURE_SPACE, our_cells, pick_preset
from bench.report.cells import (
    MARKS_LEGEND,
    best_floor,
    emphasise,
    fmt_value,
    mark_against,
    ranks_by_shown_value,
)
from bench.report.floors import at_or_below
from bench.tools.paper_grid import render_grid
from bench.tools.paper_sweep import render_sweep

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
        f"seeds, not corrected for multiple comparisons ({MARKS_LEGEND}); ⚠: no result "
        "(at or below the metric's floor, or degenerate seeds), never bold; cells in italics: training-free floors, never ranked._",
    ]
    pairs = []
    for t in tables:
        lines += ["", f"## Table {t['id']}: {t['title']}"]
        if t.get("kind") == "sweep":
            lines += render_sweep(t, Path(results_dir), out_dir)
            continue
        if t.get("kind") == "grid":
            lines += render_grid(t, Path(results_dir))
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
