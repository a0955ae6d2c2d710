"""Markdown (and CSV) leaderboards, rebuilt from records only.

One table per (preset, dataset): methods x test metrics, mean ± std over seeds, best in
bold, second underlined, and significance marks of a paired test over matched seeds
against the reference method (``***`` p < 0.01, ``**`` p < 0.05, ``*`` p < 0.1).
Classification tables end with their floors (majority class, chance: bench/tasks/classification/floors.py);
a mean at or below its floor is marked ⚠, as is a method with a seed that predicts one
class for every test image, and neither is ever bold or underlined.
What is a floor, a degenerate seed or an extra section is the suite's task's
(bench/api/task.py). The tables' rows and cells are bench/tools/board.py's, which the
site (`bench site`) renders too. The header says what was run, where, when and from which commit. The output depends
only on the records, so rebuilding from the same records gives the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from bench.api.errors import BenchError
from bench.api.record import machines
from bench.api.registry import METRICS
from bench.engine.planning import method_inapplicable
from bench.metrics.metric import ranked_metrics
from bench.report.aggregate import TESTS
from bench.report.cells import MARKS_LEGEND
from bench.report.stats import MIN_SEEDS_FOR_TEST
from bench.tools.board import Board, load_board, sections


def precision_check(
    frame: pd.DataFrame, preset: str, dataset: str, test: str, metrics: tuple[str, ...]
) -> list[str]:
    """Methods run in both fp32 and bf16 in one table: the test metrics side by side, the
    difference of the means and a paired test over matched seeds (does bf16 change accuracy?)."""
    frame = frame[
        (frame["preset"] == preset) & (frame["dataset"] == dataset) & frame["metric"].isin(metrics)
    ]
    both = [m for m, g in frame.groupby("method") if {"fp32", "bf16"} <= set(g["precision"])]
    if not both:
        return []
    lines = [
        "",
        f"Precision check (same method and protocol, fp32 vs bf16 autocast; paired {test} over matched seeds):",
        "",
        "| method | metric | fp32 (mean ± std) | bf16 (mean ± std) | bf16 - fp32 | p | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in both:
        for metric in metrics:
            g = frame[(frame["method"] == method) & (frame["metric"] == metric)]
            by = {
                p: g[g["precision"] == p].groupby("seed")["value"].mean() for p in ("fp32", "bf16")
            }
            common = sorted(set(by["fp32"].index) & set(by["bf16"].index))
            if not common:
                continue
            a, b = by["fp32"][common].to_numpy(), by["bf16"][common].to_numpy()
            p = TESTS[test](b, a) if len(common) >= 2 else np.nan
            lines.append(
                f"| {method} | {metric} | {a.mean():.3f} ± {np.std(a, ddof=1) if len(a) > 1 else np.nan:.3f} | "
                f"{b.mean():.3f} ± {np.std(b, ddof=1) if len(b) > 1 else np.nan:.3f} | {b.mean() - a.mean():+.3f} | "
                f"{p:.2f} | {', '.join(map(str, common))} |"
            )
    return lines


def table_references(suite, records, reference: str | None) -> dict:
    """Per table (preset, dataset): the method its marks test against, and why not the
    suite's reference where that does not apply to the table's data
    (`Method.inapplicable`, e.g. ODM on 2 classes): then the suite's next method that
    applies and has records there takes its place."""

    def why_not(method, preset, class_names, dataset):
        try:
            return method_inapplicable(suite, suite.preset(preset), method, class_names, dataset)
        except BenchError:  # a preset no longer in the suite: nothing to check against
            return None

    out = {}
    for preset, dataset in sorted({(r.preset, r.dataset) for r in records}):
        recs = [r for r in records if r.preset == preset and r.dataset == dataset]
        classes = tuple(recs[0].class_names or ())
        why = why_not(reference, preset, classes, dataset) if reference else None
        used = reference
        if why:
            have = {r.method for r in recs}
            used = next(
                (
                    m.name
                    for m in suite.methods
                    if m.name != reference
                    and m.name in have
                    and not why_not(m.name, preset, classes, dataset)
                ),
                None,
            )
        out[(preset, dataset)] = (used, why)
    return out


def reference_note(reference, table_reference, why, has_rows, dataset) -> list[str]:
    """The line under a table whose marks are not against the suite's reference."""
    if why:
        against = (
            f"marks here are against `{table_reference}`, the suite's next method"
            if table_reference
            else "no significance marks"
        )
        return ["", f"_`{reference}` does not apply to {dataset}: {why}; {against}._"]
    if not has_rows:
        return [
            "",
            f"_No records of the reference `{reference}` for this table yet: no significance marks._",
        ]
    return []


def render_markdown(board: Board) -> str:
    """The markdown of a suite's leaderboard: its header, then every (preset, dataset)
    section of `sections` (bench/tools/board.py, which the site renders too)."""
    suite, records, failed, summary = board.suite, board.records, board.failed, board.summary
    reference, test, task, references = board.reference, board.test, board.task, board.references
    prov = [r.provenance for r in records]
    commits = sorted({p.commit_label for p in prov})
    started = min(p.started for p in prov)
    finished = max(p.finished for p in prov)
    synthetic = sorted({r.dataset for r in records if r.data and r.data.synthetic})
    elsewhere = (
        f", or the method named under a table where `{reference}` does not apply to its data"
        if any(why for _, why in (references or {}).values())
        else ""
    )
    lines = [
        f"# Leaderboard: {suite.name}",
        "",
        f"_Generated by `bench leaderboard --suite {suite.name}` from {len(records)} records in `{shown_path(board.results_dir)}/`; do not edit by hand._",
        "",
        f"- **What**: {suite.description}. Presets: {', '.join(sorted({r.preset for r in records}))}; "
        f"datasets: {', '.join(sorted({r.dataset for r in records}))}; methods: {', '.join(sorted({r.method for r in records}))}; "
        f"seeds: {', '.join(str(s) for s in sorted({r.seed for r in records}))}.",
        f"- **Where**: {machines(prov)}; "
        f"precision {', '.join(sorted({p.precision for p in prov}))}; "
        f"torch {', '.join(sorted({p.package('torch') for p in prov}))}.",
        f"- **When**: {started} to {finished} (UTC).",
        f"- **Code**: commit {', '.join(commits)}.",
        f"- **Statistics**: mean ± sample std over seeds on the test split (model selected on validation). "
        f"Marks: paired {'t-test' if test == 'ttest' else 'Wilcoxon signed-rank test'} over matched seeds against "
        f"`{reference}`{elsewhere} (a prior's row, `method ▸ prior`: against its own method), on {MIN_SEEDS_FOR_TEST} or more matched seeds only "
        f"(fewer: no mark, whatever the p-value), Holm-corrected over the comparisons of each table and metric: "
        f"{MARKS_LEGEND}. **Best** in bold, <u>second</u> underlined; "
        f"lower is better for {', '.join(sorted(m for m in ranked_metrics(set(summary['metric'])) if not METRICS.get(m).higher_is_better)) or 'none'}.",
    ]
    dirty = [r for r in records if r.provenance.git_dirty]
    if dirty:
        lines.append(
            f"- **⚠ Uncommitted code**: {len(dirty)} of the records were made with uncommitted changes (`git_dirty`), "
            "so the code behind them cannot be checked out: " + ", ".join(r.label for r in dirty)
        )
    foreign = [r for r in records if not r.provenance.made_by_bench]
    if foreign:
        programs = sorted({r.provenance.program for r in foreign})
        lines.append(
            f"- **⚠ Not made by `bench`**: {len(foreign)} of the records were made by another program "
            f"({', '.join(f'`{p}`' for p in programs)}), so the command they store does not remake them: "
            + ", ".join(r.label for r in foreign)
        )
    if failed:
        lines.append(
            f"- **Failed units** (not in the tables): {len(failed)}: "
            + ", ".join(r.label for r in failed)
        )
    if synthetic:
        lines.append(
            f"- **SYNTHETIC DATA**: {', '.join(synthetic)} are procedurally generated toy datasets, not medical images."
        )
    header, lines, n_flagged, n_one_class = lines, [], 0, 0
    for section in sections(board):
        lines += section.markdown()
        n_flagged += sum(t.n_flagged for t in section.tables)
        n_one_class += sum(t.n_one_class for t in section.tables)
    lines += task.leaderboard_sections(summary, reference)
    header += task.header_notes(records, n_flagged, n_one_class)
    return "\n".join(header + lines) + "\n"


def shown_path(folder) -> str:
    """A folder as a table names it: relative to the working directory when inside it
    (`results`), else whole."""
    rel = os.path.relpath(Path(folder).resolve())
    return Path(rel if not rel.startswith("..") else Path(folder).resolve()).as_posix()


def write_leaderboard(
    suite_name: str,
    results_dir="results",
    out_dir="leaderboards",
    reference: str | None = None,
    test: str = "ttest",
) -> list[Path]:
    board = load_board(suite_name, results_dir, reference, test)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / f"{board.suite.name}.md", out / f"{board.suite.name}.csv"
    md.write_text(render_markdown(board))
    summary, references = board.summary, board.references
    used = [references[k][0] for k in zip(summary["preset"], summary["dataset"])]
    summary.assign(reference=used, test=test).to_csv(csv, index=False, float_format="%.6g")
    return [md, csv]
