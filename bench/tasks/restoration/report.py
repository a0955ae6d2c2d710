"""The restoration task's leaderboard: its training-free floors (identity, clip_input,
nlm) as rows at each table's end, the cells of learned methods that do not beat the best
floor flagged, the survey's Table 12 layout across datasets, and the floors' header note."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.api.record import Record
from bench.api.registry import METRICS
from bench.report.aggregate import base_method, records_by_row
from bench.report.cells import best_floor, fmt_value, ranked_cells
from bench.report.floors import at_or_below
from bench.tasks.restoration.scoring import FLOOR_METHODS, is_floor_method


def survey_layout(summary: pd.DataFrame, reference: str | None) -> list[str]:
    """The survey's Table 12 layout (denoising: RMSE, PSNR, SSIM) and the same with NMAE
    for RMSE: methods x (dataset: metric), means over seeds. The best learned method of
    each column is bold; the floors (``bench/tasks/restoration/scoring.py``) come last, never bold, and
    a learned method's cell no better than the best floor's carries ⚠ and is never bold."""
    lines = []
    layouts = (
        ("Survey Table 12 layout (denoising): RMSE, PSNR, SSIM", ("rmse", "psnr", "ssim"), ""),
        (
            "NMAE, PSNR, SSIM",
            ("nmae", "psnr", "ssim"),
            "_The survey reports NMAE with PSNR and SSIM for generation (its Table 9) and modality conversion "
            "(Table 10), not for denoising (Table 12: RMSE, PSNR, SSIM)._",
        ),
    )
    for title, metrics, note in layouts:
        table = summary[summary["metric"].isin(metrics)]
        if table.empty:
            continue
        keys = sorted(set(zip(table["preset"], table["dataset"])))
        listed = list(dict.fromkeys(table.sort_values("method")["method"]))
        floors = sorted(
            (m for m in listed if is_floor_method(m)),
            key=lambda m: (FLOOR_METHODS.index(base_method(m)), m),
        )
        methods = [m for m in listed if m not in floors]
        if reference in methods:
            methods.remove(reference)
            methods.insert(0, reference)
        head = " | ".join(f"{d} ({p}) {m.upper()}" for p, d in keys for m in metrics)
        lines += (
            ["", f"## {title}", ""]
            + ([note, ""] if note else [])
            + [f"| method | {head} |", "|---|" + "---|" * (len(keys) * len(metrics))]
        )
        best, flagged = {}, set()
        for p, d in keys:
            for m in metrics:
                col = table[
                    (table["preset"] == p) & (table["dataset"] == d) & (table["metric"] == m)
                ].set_index("method")["mean"]
                higher = METRICS.get(m).higher_is_better
                floor = best_floor({f: col[f] for f in floors if f in col.index}, higher)
                flagged |= {
                    (p, d, m, meth)
                    for meth in methods
                    if meth in col.index and at_or_below(col[meth], floor, higher)
                }
                rankable = col[
                    [meth in methods and (p, d, m, meth) not in flagged for meth in col.index]
                ].dropna()
                if len(rankable) > 1:  # a lone method is not "best"
                    best[(p, d, m)] = rankable.max() if higher else rankable.min()
        for meth in methods + floors:
            cells = []
            for p, d in keys:
                for m in metrics:
                    row = table[
                        (table["preset"] == p)
                        & (table["dataset"] == d)
                        & (table["metric"] == m)
                        & (table["method"] == meth)
                    ]
                    v = row["mean"].iloc[0] if len(row) else np.nan
                    text = "n/a" if not np.isfinite(v) else fmt_value(v, m)
                    if meth in floors:
                        text = f"_{text}_"
                    elif (p, d, m, meth) in flagged:
                        text += " ⚠"
                    elif np.isfinite(v) and v == best.get((p, d, m)):
                        text = f"**{text}**"
                    cells.append(text)
            label = (
                f"_{meth} (floor)_"
                if meth in floors
                else f"{meth}{' (ref)' if meth == reference else ''}"
            )
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def restoration_floors(
    recs: list[Record],
    table: pd.DataFrame,
    metrics: list[str],
    methods: list[str],
    floors: dict,
    ranked: dict,
) -> tuple[dict, list[str], dict]:
    """A restoration table's floors: the training-free methods of ``bench/tasks/restoration/scoring.py``
    (identity, clip_input, nlm) leave the ranked rows for floor rows at the table's
    end (mean over seeds, never bold); every other method's cell that does not beat the
    best floor's (PSNR, SSIM at or below it; RMSE, NMAE at or above it; as shown, 3
    decimals) is flagged ⚠ and never bold. Other tables come back as they were."""
    is_floor = table["method"].map(is_floor_method)
    if recs[0].task != "restoration" or not is_floor.any():
        return ranked, methods, floors
    labels = sorted(
        set(table.loc[is_floor, "method"]), key=lambda m: (FLOOR_METHODS.index(base_method(m)), m)
    )
    rows = {
        m: {
            k: float(v)
            for k, v in table[table["method"] == m].set_index("metric")["mean"].items()
            if np.isfinite(v)
        }
        for m in labels
    }
    best = {
        k: best_floor({m: rows[m].get(k, np.nan) for m in labels}, METRICS.get(k).higher_is_better)
        for k in metrics
    }
    learned = table[~is_floor]
    ranked = {k: ranked_cells(learned, k, best[k]) for k in metrics}
    return ranked, [m for m in methods if not is_floor_method(m)], {**floors, **rows}


def restoration_floor_note(records: list[Record], n_flagged: int) -> list[str]:
    """The header line of a leaderboard whose restoration tables have floor rows."""
    present = [
        f for f in FLOOR_METHODS if any(r.task == "restoration" and r.method == f for r in records)
    ]
    if not present:
        return []
    return [
        f"- **Floors**: each restoration table ends with its training-free floors ({', '.join(f'`{f}`' for f in present)}: "
        "the degraded input, clipped to [0, 1], non-local means; nothing learned), never ranked; ⚠ marks "
        f"{n_flagged} cell(s) of other methods that do not beat the best floor's (PSNR / SSIM at or below it, RMSE / NMAE "
        "at or above it): no result, never bold."
    ]


def interval_note(records: list[Record], methods: list[str]) -> list[str]:
    """PSNR and SSIM's bootstrap 95 % intervals per seed, over the test source images
    (what difference between two methods is noise at this many images)."""
    lines = []
    by_row = records_by_row(records)
    for metric in ("psnr", "ssim"):
        cis = {
            m: [
                f"[{ci[0]:.{2 if metric == 'psnr' else 3}f}, {ci[1]:.{2 if metric == 'psnr' else 3}f}]"
                for r in by_row.get(m, [])
                if (ci := (r.evaluation.get("ci95_test") or {}).get(metric))
            ]
            for m in methods
        }
        if any(cis.values()):
            n = {r.evaluation.get("n_source_images_test") for r in records}
            lines += [
                "",
                f"{metric.upper()}, bootstrap 95 % interval over the {', '.join(map(str, sorted(n - {None})))} "
                "test source images (their patches resampled together), per seed: "
                + "; ".join(f"{m} {', '.join(v)}" for m, v in cis.items() if v)
                + ".",
            ]
    return lines
