"""Markdown (and CSV) leaderboards, rebuilt from records only.

One table per (preset, dataset): methods x test metrics, mean ± std over seeds, best in
bold, second underlined, and significance marks of a paired test over matched seeds
against the reference method (``***`` p < 0.01, ``**`` p < 0.05, ``*`` p < 0.1).
Classification tables end with their floors (majority class, chance: bench/tasks/classification/floors.py);
a mean at or below its floor is marked ⚠, as is a method with a seed that predicts one
class for every test image, and neither is ever bold or underlined.
What is a floor, a degenerate seed or an extra section is the suite's task's
(bench/api/task.py). The header says what was run, where, when and from which commit. The output depends
only on the records, so rebuilding from the same records gives the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from bench.api.errors import BenchError
from bench.api.record import Data
from bench.api.registry import METRICS, TASKS
from bench.engine.config import load_suite
from bench.engine.planning import method_inapplicable
from bench.engine.records import load_records
from bench.metrics.metric import ranked_metrics
from bench.report.aggregate import (
    TESTS,
    records_frame,
    summarise,
    variant_labels,
    with_ablation_tables,
)
from bench.report.cells import ranked_cells
from bench.report.floors import metric_floors
from bench.report.notes import convergence_note, untrained_note, untrained_seeds, unusable_note
from bench.report.rows import table_rows
from bench.report.stats import MIN_SEEDS_FOR_TEST


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


def render_markdown(
    suite,
    records,
    failed,
    summary: pd.DataFrame,
    reference: str | None,
    test: str,
    frame: pd.DataFrame,
    task,
    references: dict | None = None,
    problems: list[tuple[str, str]] = (),
    results_dir="results",
) -> str:
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
        f"_Generated by `bench leaderboard --suite {suite.name}` from {len(records)} records in `{shown_path(results_dir)}/`; do not edit by hand._",
        "",
        f"- **What**: {suite.description}. Presets: {', '.join(sorted({r.preset for r in records}))}; "
        f"datasets: {', '.join(sorted({r.dataset for r in records}))}; methods: {', '.join(sorted({r.method for r in records}))}; "
        f"seeds: {', '.join(str(s) for s in sorted({r.seed for r in records}))}.",
        f"- **Where**: {'; '.join(sorted({p.device for p in prov}))}; precision {', '.join(sorted({p.precision for p in prov}))}; "
        f"torch {', '.join(sorted({p.package('torch') for p in prov}))}.",
        f"- **When**: {started} to {finished} (UTC).",
        f"- **Code**: commit {', '.join(commits)}.",
        f"- **Statistics**: mean ± sample std over seeds on the test split (model selected on validation). "
        f"Marks: paired {'t-test' if test == 'ttest' else 'Wilcoxon signed-rank test'} over matched seeds against "
        f"`{reference}`{elsewhere} (a prior's row, `method ▸ prior`: against its own method), on {MIN_SEEDS_FOR_TEST} or more matched seeds only "
        f"(fewer: no mark, whatever the p-value), Holm-corrected over the comparisons of each table and metric: "
        f"*** p < 0.01, ** p < 0.05, * p < 0.1. **Best** in bold, <u>second</u> underlined; "
        f"lower is better for {', '.join(sorted(m for m in ranked_metrics(set(summary['metric'])) if not METRICS.get(m).higher_is_better)) or 'none'}.",
    ]
    dirty = [r for r in records if r.provenance.git_dirty]
    if dirty:
        lines.append(
            f"- **⚠ Uncommitted code**: {len(dirty)} of the records were made with uncommitted changes (`git_dirty`), "
            "so the code behind them cannot be checked out: " + ", ".join(r.label for r in dirty)
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
    for (preset, dataset), by_table in summary.groupby(["preset", "dataset"], sort=True):
        recs = [r for r in records if r.dataset == dataset and r.preset == preset]
        data = recs[0].data or Data()
        here = frame[(frame["preset"] == preset) & (frame["dataset"] == dataset)]
        table_reference, why = (references or {}).get((preset, dataset), (reference, None))
        lines += [
            "",
            f"## {dataset} ({preset}){' — SYNTHETIC' if data.synthetic else ''}",
            "",
            f"Task {recs[0].task}, {task.table_detail(recs[0])}; n = {data.n}; split hash "
            f"`{data.split_hash}`; exact duplicates across splits: {data.duplicates_across_splits}; "
            f"files: {', '.join(f'{Path(k).name} (MD5 {v})' for k, v in data.files.items()) or 'none'}; source: {data.source or 'n/a'}."
            + "".join(
                f" ⚠ {note}."
                for note in sorted({n for r in recs if r.data for n in r.data.notes or []})
            ),
        ]
        main = by_table[by_table["table"] == ""]
        body, methods, flagged, one_class = render_table(
            main, recs, here[here["table"] == ""], task
        )
        n_flagged, n_one_class = n_flagged + flagged, n_one_class + one_class
        lines += body
        extras = task.table_extras(recs, methods, main_metrics(main))  # may continue the table
        lines += extras[:1] if extras[:1] and extras[0].startswith("|") else []
        lines += reference_note(
            reference, table_reference, why, bool(main["is_reference"].any()), dataset
        )
        lines += convergence_note(recs)
        lines += untrained_note(recs)
        lines += unusable_note(problems, dataset)
        lines += precision_check(frame, preset, dataset, test, task.key_metrics)
        lines += extras[1:] if extras[:1] and extras[0].startswith("|") else extras
        for base in sorted(set(by_table["table"]) - {""}):
            lines += [
                "",
                f"### {dataset} ({preset}): ablations of {base}",
                "",
                f"_The variants of `{base}` (the paper's ablation table layout), its full method last; "
                f"marks and verdicts against `{base}`._",
            ]
            ablations = by_table[by_table["table"] == base]
            body, _, flagged, one_class = render_table(
                ablations, recs, here[here["table"] == base], task, base_last=True
            )
            n_flagged, n_one_class = n_flagged + flagged, n_one_class + one_class
            lines += body
    lines += task.leaderboard_sections(summary, reference)
    header += task.header_notes(records, n_flagged, n_one_class)
    return "\n".join(header + lines) + "\n"


def shown_path(folder) -> str:
    """A folder as a table names it: relative to the working directory when inside it
    (`results`), else whole."""
    rel = os.path.relpath(Path(folder).resolve())
    return Path(rel if not rel.startswith("..") else Path(folder).resolve()).as_posix()


def main_metrics(table: pd.DataFrame) -> list[str]:
    """A table's ranked metrics in the leaderboard's order."""
    return ranked_metrics(set(table["metric"]))


def render_table(table, recs, frame, task, base_last=False):
    """One table of a leaderboard (its verdict block, then the metrics of its methods and
    their priors, then its floors): (lines, method rows, flagged cells, one-class rows)."""
    metrics = main_metrics(table)
    methods, labels, identical = table_rows(table, frame, base_last)
    rows = [m for m in methods if not table.loc[table["method"] == m, "is_prior"].any()]
    ref_row = next((m for m in rows if table.loc[table["method"] == m, "is_reference"].any()), None)
    # a row that is its prior is never ranked, as a prior is not
    table = table.assign(is_prior=table["is_prior"] | table["method"].isin(identical))
    floors = task.split_floors(recs)
    floor = metric_floors(floors, task.floored_metrics)
    ranked = {m: ranked_cells(table, m, floor.get(m)) for m in metrics}
    ranked, methods, floors = task.table_floors(recs, table, metrics, methods, floors, ranked)
    cells = {m: c for m, (c, _) in ranked.items()}
    n_flagged = sum(n for _, n in ranked.values())
    seeds = table[table["metric"] == metrics[0]].set_index("method")["n"]
    one_class = table[table["metric"] == metrics[0]].set_index("method")["one_class_seeds"]
    lines = task.verdict(recs, frame, rows, ref_row, with_priors=not base_last)
    lines += [
        "",
        "| method | seeds | " + " | ".join(metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    n_one_class = 0
    untrained = untrained_seeds(recs)
    for m in methods:
        name = labels.get(m, m)
        if one_class.get(m, 0):
            name += f" ⚠ {task.degenerate_label} ({one_class[m]}/{seeds.get(m, 0)} seeds)"
            n_one_class += 1
        if m in untrained:
            name += " ⚠ untrained diffusion stage ({}/{} seeds)".format(*untrained[m])
        lines.append(
            f"| {name} | {seeds.get(m, 0)} | "
            + " | ".join(cells[k].get(m, "n/a") for k in metrics)
            + " |"
        )
    for label, values in floors.items():
        lines.append(
            f"| _{label} (floor)_ | | "
            + " | ".join(f"_{values[k]:.3f}_" if k in values else "" for k in metrics)
            + " |"
        )
    return lines, methods, n_flagged, n_one_class


def write_leaderboard(
    suite_name: str,
    results_dir="results",
    out_dir="leaderboards",
    reference: str | None = None,
    test: str = "ttest",
) -> list[Path]:
    suite = load_suite(suite_name)
    problems: list[tuple[str, str]] = []
    records = load_records(Path(results_dir), suite.name, status="ok", problems=problems)
    if not records:
        damaged = "; ".join(f"{p}: {why}" for p, why in problems)
        raise BenchError(
            f"no complete records for suite {suite.name!r} under {results_dir}/"
            + (f" ({len(problems)} not usable: {damaged})" if problems else "")
            + f" (run `bench run --suite {suite.name}` first)"
        )
    failed = [r for r in load_records(Path(results_dir), suite.name, status="failed")]
    reference = reference or suite.reference
    task = TASKS.get(suite.task)
    frame = with_ablation_tables(records_frame(records, task))
    frame["variant"] = variant_labels(frame)
    references = table_references(suite, records, reference)
    summary = summarise(frame, {k: used for k, (used, _) in references.items()}, test)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / f"{suite.name}.md", out / f"{suite.name}.csv"
    md.write_text(
        render_markdown(
            suite,
            records,
            failed,
            summary,
            reference,
            test,
            frame,
            task,
            references,
            problems=problems,
            results_dir=results_dir,
        )  # fmt: skip
    )
    used = [references[k][0] for k in zip(summary["preset"], summary["dataset"])]
    summary.assign(reference=used, test=test).to_csv(csv, index=False, float_format="%.6g")
    return [md, csv]
