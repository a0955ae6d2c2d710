"""The generation task's leaderboard sections: the real-vs-real row, the extractor that
made every number, FID's bootstrap intervals, per-class FID, and the floors' header note."""

from __future__ import annotations

import numpy as np

from bench.api.record import Record
from bench.report.aggregate import records_by_row
from bench.tasks.generation.floors import INTENSITY_TOLERANCE, REAL_VS_REAL


def generation_extras(records: list[Record], methods: list[str], metrics: list[str]) -> list[str]:
    """Generation tables: the real-vs-real row, the extractor that made every number,
    and FID's bootstrap interval per seed (what difference between two FIDs is noise)."""
    evaluation = records[0].evaluation
    if "floors" not in evaluation:
        return []
    real = evaluation["floors"].get(REAL_VS_REAL, {})
    lines = [
        f"| _{REAL_VS_REAL} (real vs real)_ | | "
        + " | ".join(f"_{real[k]:.3f}_" if k in real else "" for k in metrics)
        + " |"
    ]
    infos = {}  # one per feature space: the same weights (version) wherever their file was
    for r in records:
        if r.evaluation:
            infos.setdefault(str(r.extractor_info.get("version")), r.extractor_info)
    for _, i in sorted(infos.items()):
        trained = dict(i.get("trained_on") or ())
        lines += [
            "",
            f"Extractor: `{i.get('name')}` {i.get('model', '')}, version `{i.get('version')}`"
            + (
                f" (trained on {trained.get('dataset')}'s {trained.get('split')} split, {trained.get('epochs')} epochs, "
                f"seed {trained.get('seed', 'not fixed')}, val AUROC {trained['val_auroc']:.3f})"
                if trained.get("val_auroc") is not None
                else ""
            )
            + (
                f": ⚠ this table's records were scored by {len(infos)} extractors, whose distances do not "
                "compare; `bench rescore` scores their stored samples again under the current one."
                if len(infos) > 1
                else "."
            ),
        ]
    by_row = records_by_row(records)
    cis = {
        m: [
            f"[{r.evaluation['fid_ci95'][0]:.1f}, {r.evaluation['fid_ci95'][1]:.1f}]"
            for r in by_row.get(m, [])
            if r.evaluation.get("fid_ci95")
        ]
        for m in methods
    }
    spreads = {
        m: [
            (r.seed, r.evaluation["fid_by_extractor_seed"])
            for r in by_row.get(m, [])
            if len(r.evaluation.get("fid_by_extractor_seed") or {}) > 1
        ]
        for m in methods
    }
    if any(spreads.values()):
        lines += [
            "",
            "FID of the same samples under extractors trained with other seeds (extractor seed: FID), "
            "per seed; the spread is what a FID difference owes the extractor alone: "
            + "; ".join(
                f"{m} "
                + ", ".join(
                    f"seed {s} ({', '.join(f'{k}: {v:.1f}' for k, v in by.items())}; "
                    f"spread {max(by.values()) - min(by.values()):.1f})"
                    for s, by in v
                )
                for m, v in spreads.items()
                if v
            )
            + ".",
        ]
    if any(cis.values()):
        lines += [
            "",
            "FID, bootstrap 95 % interval over the test and generated images, per seed: "
            + "; ".join(f"{m} {', '.join(v)}" for m, v in cis.items() if v)
            + ".",
        ]
    return lines + intensity_line(records, methods, real)


def intensity_line(records: list[Record], methods: list[str], real: dict) -> list[str]:
    """The samples' mean intensity over the reference images', per seed, ⚠ outside the
    tolerance (a brightness drift FID can hide); records scored before it existed are skipped."""
    low, high = 1 - INTENSITY_TOLERANCE, 1 + INTENSITY_TOLERANCE
    by_row = records_by_row(records)
    per_method = {
        m: [
            r.metric("test", "intensity_ratio")
            for r in by_row.get(m, [])
            if "intensity_ratio" in r.split_metrics("test")
        ]
        for m in methods
    }
    if not any(per_method.values()):
        return []
    outside = sum(not low <= v <= high for vals in per_method.values() for v in vals)
    return [
        "",
        f"Mean intensity of the samples over the reference images' (pixel space; target {low:.2f}-{high:.2f}, "
        f"⚠ outside: {outside}), per seed: "
        + "; ".join(
            f"{m} " + ", ".join(f"{v:.2f}" + ("" if low <= v <= high else " ⚠") for v in vals)
            for m, vals in per_method.items()
            if vals
        )
        + (
            f"; real training images {real['intensity_ratio']:.2f}"
            if "intensity_ratio" in real
            else ""
        )
        + ".",
    ]


def per_class_fid_table(records: list[Record], methods: list[str]) -> list[str]:
    """Generation records: FID per class (mean ± std over seeds), lowest bold (ODM Fig. 4)."""
    by_row, rows = records_by_row(records), {}
    for m in methods:
        for r in by_row.get(m, []):
            fid = r.per_class("test").get("fid")
            if fid is not None:
                rows.setdefault(m, []).append([np.nan if v is None else v for v in fid])
    if not rows:
        return []
    classes = records[0].class_names or [str(i) for i in range(len(next(iter(rows.values()))[0]))]
    n_ref = records[0].per_class("test").get("n_reference")
    means = {m: np.nanmean(np.array(v, dtype=float), axis=0) for m, v in rows.items()}
    stds = {
        m: np.nanstd(np.array(v, dtype=float), axis=0, ddof=1)
        if len(v) > 1
        else np.full(len(classes), np.nan)
        for m, v in rows.items()
    }
    header = [f"{c} (n={n})" for c, n in zip(classes, n_ref)] if n_ref else list(classes)
    lines = [
        "",
        "Per-class FID (lower is better; mean ± std over seeds; n = real images of the class in the reference split):",
        "",
        "| method | " + " | ".join(header) + " |",
        "|---|" + "---|" * len(classes),
    ]
    for m in [m for m in methods if m in rows]:
        cells = []
        for j in range(len(classes)):
            column = [means[k][j] for k in rows if np.isfinite(means[k][j])]
            v = means[m][j]
            text = (
                "n/a"
                if not np.isfinite(v)
                else (f"{v:.2f} ± {stds[m][j]:.2f}" if np.isfinite(stds[m][j]) else f"{v:.2f}")
            )
            cells.append(
                f"**{text}**" if np.isfinite(v) and len(column) > 1 and v == min(column) else text
            )
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def ordinal_table(records: list[Record], methods: list[str]) -> list[str]:
    """Ordinal data: how well the extractor classifier's grades of the samples agree with
    the grades they were generated for (QWK, Spearman), beside its agreement on the real
    reference images (the target: closer is better, more is exaggeration), and each
    grade's mean intensity over the real grade's (bench/tasks/generation/ordinal.py)."""
    by_row = records_by_row(records)
    blocks = {
        m: [
            r.payload["ordinal_consistency"]
            for r in by_row.get(m, [])
            if r.payload.get("ordinal_consistency")
        ]
        for m in methods
    }
    if not any(blocks.values()):
        return []
    real = next(b for v in blocks.values() for b in v)["real"]
    classes = records[0].class_names or []

    def cell(values):
        values = [v for v in values if v is not None and np.isfinite(v)]
        if not values:
            return "n/a"
        return (
            f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"
            if len(values) > 1
            else f"{values[0]:.2f}"
        )

    lines = [
        "",
        "Ordinal consistency (the extractor classifier grades each sample; agreement with the grade it was generated for, "
        "mean ± std over seeds; the target is the real test images' own agreement, not the maximum; and each grade's mean "
        "intensity over the real grade's, target 1):",
        "",
        "| method | seeds | QWK | Spearman | "
        + " | ".join(f"intensity {c}" for c in classes)
        + " |",
        "|---|---|---|---|" + "---|" * len(classes),
        f"| _real test images (target)_ | | _{cell([real['qwk']])}_ | _{cell([real['spearman']])}_ | "
        + " | ".join("_1.00_" for _ in classes)
        + " |",
    ]
    for m, got in blocks.items():
        if got:
            ratios = [
                cell([b["class_intensity_ratio"][k] for b in got]) for k in range(len(classes))
            ]
            lines.append(
                f"| {m} | {len(got)} | {cell([b['generated']['qwk'] for b in got])} | "
                f"{cell([b['generated']['spearman'] for b in got])} | " + " | ".join(ratios) + " |"
            )
    return lines


def generation_floor_note(records: list[Record], n_flagged: int, n_one_class: int) -> list[str]:
    if not any("floors" in r.evaluation for r in records):
        return []
    return [
        f"- **Floors**: each table ends with two zero-diversity generators made from the training split (each "
        "class's mean image; one training image per class), scored like the methods; ⚠ marks "
        f"{n_flagged} FID / KID / recall cell(s) no better than the better of them, and {n_one_class} method row(s) "
        "with a seed whose samples collapsed (diversity < 0.5 of the real images') or copy training images "
        "(novelty < 0.5): no result, never bold. The real-vs-real row (training images against test) is what a "
        "perfect generator would score."
    ]
