"""What the site shows of one table beyond its cells: each method row's details (its
per-seed values, its priors, its record files and their provenance, its figures) and the
table's own figures (every row's ROC curve, the verdict's forest plot)."""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

import numpy as np

from bench.api.record import Record
from bench.report.aggregate import PRIOR
from bench.report.cells import fmt_value
from bench.tools.board import Board, TableCells
from bench.tools.figures import (
    confusion_figure,
    forest_figure,
    roc_figure,
    samples_figure,
    strip_figure,
)


def data_uri(data: bytes, kind: str) -> str:
    mime = {"svg": "image/svg+xml", "png": "image/png"}[kind]
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def shown(path: Path | None) -> str:
    """A record file as the site names it: relative to the working directory when inside it."""
    if path is None:
        return "?"
    rel = os.path.relpath(Path(path).resolve())
    return Path(rel if not rel.startswith("..") else Path(path).resolve()).as_posix()


class Figures:
    """The figures a site has made: {file name: bytes}, for the page and leaderboards/plots/."""

    def __init__(self):
        self.files: dict[str, bytes] = {}

    def add(self, name: str, data: bytes | None, kind: str, title: str) -> dict | None:
        if data is None:
            return None
        name = f"{name}.{kind}".replace(" · ", "-").replace(PRIOR, "-prior-").replace(" ", "_")
        self.files[name] = data
        return {"title": title, "src": data_uri(data, kind), "file": name}


def row_records(board: Board, preset: str, dataset: str, key: str) -> list[Record]:
    """The records behind one row (a variant label; a prior's: its method's records)."""
    f = board.frame
    sel = f[(f["preset"] == preset) & (f["dataset"] == dataset) & (f["variant"] == key)]
    ids = {
        (m.split(PRIOR)[0], h, p, s)
        for m, h, p, s in zip(sel["method"], sel["config_hash"], sel["precision"], sel["seed"])
    }
    return sorted(
        (
            r
            for r in board.records
            if r.preset == preset
            and r.dataset == dataset
            and (r.method, r.config_hash, r.precision, r.seed) in ids
        ),
        key=lambda r: r.seed,
    )


def per_seed(board: Board, preset: str, dataset: str, table: str, key: str, metrics) -> list:
    """[(seed, [value per metric])] of one row, as the markdown formats a value."""
    f = board.frame
    sel = f[
        (f["preset"] == preset)
        & (f["dataset"] == dataset)
        & (f["variant"] == key)
        & (f["table"] == table)
    ]
    out = []
    for seed, g in sel.groupby("seed", sort=True):
        values = g.groupby("metric")["value"].mean()
        out.append(
            (
                int(seed),
                [
                    fmt_value(values[m], m) if m in values and np.isfinite(values[m]) else "n/a"
                    for m in metrics
                ],
            )
        )
    return out


def provenance(r: Record) -> dict:
    p = r.provenance
    wall = "n/a" if r.timings.wall_s is None else f"{r.timings.wall_s:.0f} s"
    resumed = r.selection.other.get("resumed_after_epoch")
    if resumed:  # its wall time is the last leg's (selection.train_compute_s is the whole)
        wall += f" (its last leg: resumed after epoch {resumed})"
    return {
        "file": shown(r.path),
        "seed": r.seed,
        "commit": (p.git_commit or "unknown")[:10] + (" (dirty)" if p.git_dirty else ""),
        "precision": p.precision,
        "device": p.device,
        "wall": wall,
        "finished": p.finished,
    }


def classification_row_figures(figs: Figures, stem: str, key: str, recs: list[Record]) -> list:
    """The confusion matrix and training curves of a row's lowest seed."""
    from bench.tasks.classification.plots import curves_figure

    if not recs or PRIOR in key:
        return []
    first = recs[0]
    title = f"{key}, seed {first.seed}"
    out = [
        figs.add(
            f"{stem}-{key}-confusion", confusion_figure(first, title), "svg", f"confusion: {key}"
        )
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = curves_figure({key: first}, "Training curve", Path(tmp) / "t.png")
        if path and Path(path).is_file():
            out.append(
                figs.add(
                    f"{stem}-{key}-curves", Path(path).read_bytes(), "png", f"training curve: {key}"
                )
            )
    return [f for f in out if f]


def identity_psnr(board: Board, preset: str, dataset: str) -> np.ndarray | None:
    """The identity floor's per-image PSNR (the degraded images' own) on a restoration table."""
    for r in board.records:
        if (r.preset, r.dataset, r.method) == (preset, dataset, "identity"):
            try:
                return r.load_predictions().get("test_psnr")
            except (OSError, ValueError, TypeError):
                return None
    return None


def row_figures(figs, board, preset, dataset, stem, key, recs) -> list:
    if not recs:
        return []
    task = board.task.name
    if task == "classification":
        return classification_row_figures(figs, stem, key, recs)
    if task == "generation":
        return [
            figs.add(f"{stem}-{key}-samples", samples_figure(recs[0]), "png", f"samples: {key}")
        ]
    if task == "restoration":
        data = strip_figure(recs[0], identity_psnr(board, preset, dataset))
        return [figs.add(f"{stem}-{key}-strip", data, "png", f"restoration strip: {key}")]
    return []


def table_view(board: Board, figs: Figures, section, cells: TableCells, index: int) -> dict:
    """One table for the template: rows with their details, and the table's figures."""
    from bench.tools.mdhtml import inline, to_html

    preset, dataset = section.preset, section.dataset
    stem = f"{board.suite.name}/{preset}-{dataset}" + (f"-{cells.title}" if cells.title else "")
    title = f"{dataset} ({preset})" + (f": ablations of {cells.title}" if cells.title else "")
    rows, curves = [], []
    for row in cells.rows:
        view = {
            "kind": row.kind,
            "reference": row.reference,
            "label": inline(row.label),
            "seeds": row.seeds,
            "cells": [inline(c) for c in row.cells],
            "precision": "",
            "details": None,
        }
        if row.kind != "floor":
            recs = row_records(board, preset, dataset, row.key)
            view["precision"] = " ".join(sorted({r.precision for r in recs}))
            prior = row.key.split(PRIOR)[1] if PRIOR in row.key else None
            curves.append(
                (row.key, recs, f"test_prior_{prior}" if prior else "test_probs", bool(prior))
            )
            priors = [
                {"label": inline(p.label), "cells": [inline(c) for c in p.cells]}
                for p in cells.rows
                if p.kind == "prior" and p.key.split(PRIOR)[0] == row.key.split(" ")[0]
            ]
            view["details"] = {
                "seeds": per_seed(board, preset, dataset, cells.title, row.key, cells.metrics),
                "priors": priors if not prior else [],
                "records": [provenance(r) for r in recs],
                "figures": row_figures(figs, board, preset, dataset, stem, row.key, recs),
            }
        rows.append(view)
    figures = []
    if board.task.name == "classification":
        figures.append(
            figs.add(f"{stem}-roc", roc_figure(curves, f"ROC: {title}, test split"), "svg", "ROC")
        )
        figures.append(
            figs.add(
                f"{stem}-forest",
                forest_figure(cells.verdict, f"Verdict: {title}"),
                "svg",
                "forest plot of the verdict",
            )
        )
    return {
        "id": f"{board.suite.name}-{preset}-{dataset}-{index}",
        "title": title,
        "verdict": to_html(cells.verdict),
        "metrics": cells.metrics,
        "method_rows": [r for r in rows if r["kind"] != "floor"],
        "floor_rows": [r for r in rows if r["kind"] == "floor"],
        "figures": [f for f in figures if f],
    }
