"""A suite's leaderboard as data: the records aggregated once (`Board`), each table's rows
of cells (`TableCells`: the verdict lines, then one `Row` per method, prior and floor with
its cells exactly as shown: mean ± std, ⚠, **best**, <u>second</u>, significance marks),
and each (preset, dataset) section as a list of blocks (markdown lines, or a table).
The markdown leaderboard (bench/tools/leaderboard.py) and the site (bench/tools/site.py)
both render these, so both show the same numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.api.errors import BenchError
from bench.api.record import Data, Record
from bench.api.registry import TASKS
from bench.engine.config import load_suite
from bench.engine.records import load_records
from bench.metrics.metric import ranked_metrics
from bench.report.aggregate import (
    records_frame,
    summarise,
    variant_labels,
    with_ablation_tables,
)
from bench.report.cells import ranked_cells
from bench.report.floors import metric_floors
from bench.report.notes import convergence_note, untrained_note, untrained_seeds, unusable_note
from bench.report.rows import table_rows


@dataclass
class Row:
    """One row of a table: `key` is the method's variant label (the ``variant`` of the
    frame) or a floor's name; `cells` are the metric cells in markdown, as shown."""

    key: str
    label: str
    kind: str  # "method", "prior" or "floor"
    seeds: str
    cells: list[str]
    reference: bool = False
    raw: str | None = None  # a row a task wrote as a markdown line (its floors' row)


@dataclass
class TableCells:
    """One leaderboard table: its verdict block (markdown lines), metrics and rows."""

    verdict: list[str]
    metrics: list[str]
    rows: list[Row]
    methods: list[str]  # the method rows' keys (methods and their priors), in order
    n_flagged: int = 0
    n_one_class: int = 0
    title: str = ""  # "" for a dataset's main table, else its ablation table's base method

    def markdown(self) -> list[str]:
        lines = list(self.verdict) + [
            "",
            "| method | seeds | " + " | ".join(self.metrics) + " |",
            "|---|---|" + "---|" * len(self.metrics),
        ]
        for row in self.rows:
            if row.raw is not None:
                lines.append(row.raw)
            elif row.kind == "floor":
                cells = [f"_{c}_" if c else "" for c in row.cells]
                lines.append(f"| _{row.label}_ | | " + " | ".join(cells) + " |")
            else:
                lines.append(f"| {row.label} | {row.seeds} | " + " | ".join(row.cells) + " |")
        return lines


@dataclass
class Section:
    """One (preset, dataset) of a leaderboard: a heading and its blocks, each a list of
    markdown lines or a `TableCells`."""

    preset: str
    dataset: str
    synthetic: bool
    blocks: list = field(default_factory=list)

    @property
    def tables(self) -> list[TableCells]:
        return [b for b in self.blocks if isinstance(b, TableCells)]

    def markdown(self) -> list[str]:
        lines = []
        for block in self.blocks:
            lines += block.markdown() if isinstance(block, TableCells) else block
        return lines


@dataclass
class Board:
    """A suite's records and their one aggregation."""

    suite: object
    records: list[Record]
    failed: list[Record]
    problems: list[tuple[str, str]]
    task: object
    frame: pd.DataFrame
    summary: pd.DataFrame
    reference: str | None
    references: dict
    test: str
    results_dir: str | Path


def load_board(
    suite_name: str, results_dir="results", reference: str | None = None, test: str = "ttest"
) -> Board:
    """Load a suite's records and aggregate them (a BenchError where there are none)."""
    from bench.tools.leaderboard import table_references

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
    failed = load_records(Path(results_dir), suite.name, status="failed")
    reference = reference or suite.reference
    task = TASKS.get(suite.task)
    frame = with_ablation_tables(records_frame(records, task))
    frame["variant"] = variant_labels(frame)
    references = table_references(suite, records, reference)
    summary = summarise(frame, {k: used for k, (used, _) in references.items()}, test)
    return Board(
        suite, records, failed, problems, task, frame, summary, reference, references, test, results_dir
    )  # fmt: skip


def main_metrics(table: pd.DataFrame) -> list[str]:
    """A table's ranked metrics in the leaderboard's order."""
    return ranked_metrics(set(table["metric"]))


def table_cells(table, recs, frame, task, base_last=False) -> TableCells:
    """One table of a leaderboard: its verdict block, then its methods and their priors,
    then its floors."""
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
    priors = set(table.loc[table["is_prior"], "method"]) - set(identical)
    verdict = task.verdict(recs, frame, rows, ref_row, with_priors=not base_last)
    out, n_one_class = [], 0
    untrained = untrained_seeds(recs)
    for m in methods:
        name = labels.get(m, m)
        if one_class.get(m, 0):
            name += f" ⚠ {task.degenerate_label} ({one_class[m]}/{seeds.get(m, 0)} seeds)"
            n_one_class += 1
        if m in untrained:
            name += " ⚠ untrained diffusion stage ({}/{} seeds)".format(*untrained[m])
        out.append(
            Row(
                m,
                name,
                "prior" if m in priors else "method",
                str(seeds.get(m, 0)),
                [cells[k].get(m, "n/a") for k in metrics],
                reference=m == ref_row,
            )
        )
    for label, values in floors.items():
        out.append(
            Row(label, f"{label} (floor)", "floor", "", [f"{values[k]:.3f}" if k in values else "" for k in metrics])
        )  # fmt: skip
    return TableCells(verdict, metrics, out, methods, n_flagged, n_one_class)


def extra_row(line: str) -> Row:
    """A task's markdown row that continues a table (generation's real-vs-real floor)."""
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    label = cells[0].strip("_")
    return Row(label, label, "floor", cells[1], [c.strip("_") for c in cells[2:]], raw=line)


def sections(board: Board) -> list[Section]:
    """Every (preset, dataset) of the board, in the leaderboard's order."""
    from bench.tools.leaderboard import precision_check, reference_note

    out = []
    task, frame = board.task, board.frame
    main_tables = {}  # (preset, dataset) -> (its data, records, frame, method rows), for other_size
    for (preset, dataset), by_table in board.summary.groupby(["preset", "dataset"], sort=True):
        recs = [r for r in board.records if r.dataset == dataset and r.preset == preset]
        data = recs[0].data or Data()
        here = frame[(frame["preset"] == preset) & (frame["dataset"] == dataset)]
        table_reference, why = board.references.get((preset, dataset), (board.reference, None))
        notes = sorted({n for r in recs if r.data for n in r.data.notes or []})
        section = Section(preset, dataset, data.synthetic)
        section.blocks.append(
            [
                "",
                f"## {dataset} ({preset}){' — SYNTHETIC' if data.synthetic else ''}",
                "",
                f"Task {recs[0].task}, {task.table_detail(recs[0])}; n = {data.n}; split hash "
                f"`{data.split_hash}`; exact duplicates across splits: {data.duplicates_across_splits}; "
                f"files: {', '.join(f'{Path(k).name} (MD5 {v})' for k, v in data.files.items()) or 'none'}; source: {data.source or 'n/a'}."
                + "".join(f" ⚠ {note}." for note in notes),
            ]
        )
        main, main_frame = by_table[by_table["table"] == ""], here[here["table"] == ""]
        cells = table_cells(main, recs, main_frame, task)
        extras = task.table_extras(recs, cells.methods, main_metrics(main))
        if extras[:1] and extras[0].startswith("|"):  # a row that continues the table
            cells.rows.append(extra_row(extras[0]))
            extras = extras[1:]
        section.blocks.append(cells)
        section.blocks.append(
            reference_note(
                board.reference, table_reference, why, bool(main["is_reference"].any()), dataset
            )
            + convergence_note(recs)
            + untrained_note(recs)
            + unusable_note(board.problems, dataset)
            + precision_check(frame, preset, dataset, board.test, task.key_metrics)
            + extras
        )
        rows = [r.key for r in cells.rows if r.kind == "method"]
        main_tables[preset, dataset] = (data, recs, main_frame, rows)
        same_images = other_size_base(main_tables, preset, dataset)
        if same_images:
            _, *theirs = main_tables[preset, same_images]
            section.blocks.append(
                task.other_size_verdict(*main_tables[preset, dataset][1:], *theirs, same_images)
            )
        for base in sorted(set(by_table["table"]) - {""}):
            section.blocks.append(
                [
                    "",
                    f"### {dataset} ({preset}): ablations of {base}",
                    "",
                    f"_The variants of `{base}` (the paper's ablation table layout), its full method last; "
                    f"marks and verdicts against `{base}`._",
                ]
            )
            ablations = by_table[by_table["table"] == base]
            cells = table_cells(ablations, recs, here[here["table"] == base], task, base_last=True)
            cells.title = base
            section.blocks.append(cells)
        out.append(section)
    return out


def other_size_base(main_tables: dict, preset: str, dataset: str) -> str | None:
    """The first dataset of `preset` (in the leaderboard's order) whose images are
    `dataset`'s at another size: the same split hash (split, labels), other pixels
    (MedMNIST+'s breastmnist_64 beside breastmnist); None when there is none."""
    data = main_tables[preset, dataset][0]
    for (p, other), (theirs, *_) in main_tables.items():
        same_split = data.split_hash and theirs.split_hash == data.split_hash
        if (
            p == preset
            and other != dataset
            and same_split
            and theirs.images_sha256 != data.images_sha256
        ):
            return other
    return None
