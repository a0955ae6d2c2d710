"""Markdown (and CSV) leaderboards, rebuilt from records only.

One table per (preset, dataset): methods x test metrics, mean ± std over seeds, best in
bold, second underlined, and significance marks of a paired test over matched seeds
against the reference method (``***`` p < 0.01, ``**`` p < 0.05, ``*`` p < 0.1).
Classification tables end with their floors (majority class, chance: bench/report/floors.py);
a mean at or below its floor is marked ⚠, as is a method with a seed that predicts one
class for every test image, and neither is ever bold or underlined.
The header says what was run, where, when and from which commit. The output depends
only on the records, so rebuilding from the same records gives the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.api.errors import BenchError
from bench.api.registry import METRICS
from bench.engine.config import load_suite
from bench.engine.records import load_records
from bench.report.floors import (
    at_or_below,
    degenerate_generator,
    metric_floors,
    one_class_seed,
    split_floors,
)
from bench.report.stats import MIN_SEEDS_FOR_TEST, holm, paired_ttest, significance_mark, wilcoxon

METRIC_ORDER = (
    "accuracy",
    "balanced_accuracy",
    "auroc",
    "f1_macro",
    "precision_macro",
    "recall_macro",
    "kappa_quadratic",
    "ece",
    "fid",
    "kid_mean",
    "precision",
    "recall",
    "diversity",
    "novelty",
    "rmse",
    "nmae",
    "psnr",
    "ssim",
)
NOT_RANKED = {"kid_std"}  # a spread, kept in the CSV only
TESTS = {"ttest": paired_ttest, "wilcoxon": wilcoxon}


PRIOR = " ▸ "  # "diffmic_v2 ▸ DCG fused": a method's own prior, shown under it, never ranked


def records_frame(records: list[dict]) -> pd.DataFrame:
    """One row per (record, test metric); a record's priors (``priors`` in the record:
    e.g. DiffMIC-v2's DCG branches) give rows of their own, flagged ``is_prior``."""
    rows = []
    for r in records:
        common = {
            "preset": r["preset"],
            "dataset": r["dataset"],
            "config_hash": r["config_hash"],
            "precision": r.get("provenance", {}).get("precision", "fp32"),
            "seed": r["seed"],
        }
        entries = [
            (
                r["method"],
                (r.get("metrics", {}).get("test") or {}),
                one_class_seed(r) or bool(degenerate_generator(r)),
                False,
            )
        ]
        for name, prior in (r.get("priors") or {}).items():
            test = dict(prior.get("test") or {})
            share = test.pop("predicted_share", None)
            entries.append(
                (f"{r['method']}{PRIOR}{name}", test, bool(share) and max(share) >= 1.0, True)
            )
        for method, metrics, one_class, is_prior in entries:
            for name, value in metrics.items():
                rows.append(
                    {
                        **common,
                        "method": method,
                        "metric": name,
                        "value": np.nan if value is None else float(value),
                        "one_class": one_class,
                        "is_prior": is_prior,
                    }
                )
    return pd.DataFrame(rows)


def variant_labels(frame: pd.DataFrame) -> pd.Series:
    """'method'; 'method · bf16' where one method ran in several precisions in one table;
    'method [hash]' where it ran with several configs in one precision."""
    n_precisions = frame.groupby(["preset", "dataset", "method"])["precision"].transform("nunique")
    n_configs = frame.groupby(["preset", "dataset", "method", "precision"])[
        "config_hash"
    ].transform("nunique")
    label = frame["method"].where(n_precisions == 1, frame["method"] + " · " + frame["precision"])
    return label.where(n_configs == 1, label + " [" + frame["config_hash"] + "]")


def precision_check(
    frame: pd.DataFrame, preset: str, dataset: str, test: str, metrics=("auroc", "accuracy")
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


def summarise(frame: pd.DataFrame, reference: str | None, test: str = "ttest") -> pd.DataFrame:
    """Per (preset, dataset, variant, metric): mean, std, n and the paired p-value vs reference."""
    frame = frame.copy()
    frame["variant"] = variant_labels(frame) if len(frame) else []
    out = []
    for (preset, dataset, metric), g in frame.groupby(["preset", "dataset", "metric"], sort=False):
        ref = g[g["method"] == reference]
        if (
            ref["config_hash"].nunique() > 1
        ):  # several reference configs: use the one with most seeds
            ref = ref[ref["config_hash"] == ref.groupby("config_hash")["seed"].count().idxmax()]
        ref_by_seed = ref.set_index("seed")["value"]
        ref_hash = ref["config_hash"].iloc[0] if len(ref) else None
        for variant, v in g.groupby("variant", sort=False):
            by_seed = v.set_index("seed")["value"]
            p = np.nan
            is_reference = (
                ref_hash is not None
                and v["method"].iloc[0] == reference
                and set(v["config_hash"]) == {ref_hash}
            )
            is_prior = bool(v["is_prior"].iloc[0])
            against = ref_by_seed if reference and not is_reference else None
            if (
                is_prior
            ):  # a prior is tested against its own method (same records), not the reference
                own = g[
                    (g["method"] == v["method"].iloc[0].split(PRIOR)[0])
                    & g["config_hash"].isin(v["config_hash"])
                    & g["precision"].isin(v["precision"])
                ]
                against = own.set_index("seed")["value"]
            if against is not None and len(against):
                common = sorted(set(by_seed.index) & set(against.index))
                p = (
                    TESTS[test](by_seed[common].to_numpy(), against[common].to_numpy())
                    if len(common) >= MIN_SEEDS_FOR_TEST
                    else np.nan
                )
            values = v["value"].to_numpy()
            out.append(
                {
                    "preset": preset,
                    "dataset": dataset,
                    "method": variant,
                    "metric": metric,
                    "mean": np.nanmean(values) if np.isfinite(values).any() else np.nan,
                    "std": np.nanstd(values, ddof=1) if np.isfinite(values).sum() > 1 else np.nan,
                    "n": int(np.isfinite(values).sum()),
                    "p_value": p,
                    "is_reference": is_reference,
                    "one_class_seeds": int(v.drop_duplicates("seed")["one_class"].sum()),
                    "is_prior": is_prior,
                }
            )
    summary = pd.DataFrame(out)
    if len(summary):  # Holm's correction over the comparisons of one table and metric
        summary["p_raw"] = summary["p_value"]
        for idx in summary.groupby(["preset", "dataset", "metric"], sort=False).groups.values():
            summary.loc[idx, "p_value"] = holm(summary.loc[idx, "p_raw"].to_numpy())
    return summary


def _ranked_cells(
    table: pd.DataFrame, metric: str, floor: float | None = None
) -> tuple[dict[str, str], int]:
    """Each method's cell for `metric`, and how many are flagged: a mean at or below the
    metric's floor is marked ⚠; such a cell, and any of a method with a seed predicting
    one class, is never bold or underlined."""
    rows = table[table["metric"] == metric].set_index("method")
    higher = METRICS.get(metric).higher_is_better
    flagged = {m for m, r in rows.iterrows() if at_or_below(r["mean"], floor, higher)}
    rankable = rows[
        [
            m not in flagged and not r["one_class_seeds"] and not r["is_prior"]
            for m, r in rows.iterrows()
        ]
    ]
    # ranks by distinct shown value: ties share the bold (or underline); one distinct value ranks nothing
    shown = sorted({round(v, 3) for v in rankable["mean"].dropna()}, reverse=higher)
    cells = {}
    for method, r in rows.iterrows():
        if not np.isfinite(r["mean"]):
            cells[method] = "n/a"
            continue
        text = f"{r['mean']:.3f} ± {r['std']:.3f}" if np.isfinite(r["std"]) else f"{r['mean']:.3f}"
        if method in flagged:
            text += " ⚠"
        elif method in rankable.index and len(shown) > 1 and round(r["mean"], 3) == shown[0]:
            text = f"**{text}**"
        elif method in rankable.index and len(shown) > 1 and round(r["mean"], 3) == shown[1]:
            text = f"<u>{text}</u>"
        cells[method] = text + significance_mark(r["p_value"])
    return cells, len(flagged)


def render_markdown(
    suite,
    records,
    failed,
    summary: pd.DataFrame,
    reference: str | None,
    test: str,
    frame: pd.DataFrame,
) -> str:
    prov = [r["provenance"] for r in records]
    commits = sorted(
        {
            f"{p.get('git_commit') or 'unknown'}{' (dirty)' if p.get('git_dirty') else ''}"
            for p in prov
        }
    )
    started = min(p.get("started", "") for p in prov)
    finished = max(p.get("finished", "") for p in prov)
    synthetic = sorted({r["dataset"] for r in records if (r.get("data") or {}).get("synthetic")})
    lines = [
        f"# Leaderboard: {suite.name}",
        "",
        f"_Generated by `bench leaderboard --suite {suite.name}` from {len(records)} records in `results/`; do not edit by hand._",
        "",
        f"- **What**: {suite.description}. Presets: {', '.join(sorted({r['preset'] for r in records}))}; "
        f"datasets: {', '.join(sorted({r['dataset'] for r in records}))}; methods: {', '.join(sorted({r['method'] for r in records}))}; "
        f"seeds: {', '.join(str(s) for s in sorted({r['seed'] for r in records}))}.",
        f"- **Where**: {'; '.join(sorted({p.get('device', '?') for p in prov}))}; precision {', '.join(sorted({p.get('precision', '?') for p in prov}))}; "
        f"torch {', '.join(sorted({p.get('packages', {}).get('torch', '?') for p in prov}))}.",
        f"- **When**: {started} to {finished} (UTC).",
        f"- **Code**: commit {', '.join(commits)}.",
        f"- **Statistics**: mean ± sample std over seeds on the test split (model selected on validation). "
        f"Marks: paired {'t-test' if test == 'ttest' else 'Wilcoxon signed-rank test'} over matched seeds against "
        f"`{reference}` (a prior's row, `method ▸ prior`: against its own method), on {MIN_SEEDS_FOR_TEST} or more matched seeds only "
        f"(fewer: no mark, whatever the p-value), Holm-corrected over the comparisons of each table and metric: "
        f"*** p < 0.01, ** p < 0.05, * p < 0.1. **Best** in bold, <u>second</u> underlined; "
        f"lower is better for {', '.join(sorted({m for m in summary['metric'] if not METRICS.get(m).higher_is_better} - NOT_RANKED)) or 'none'}.",
    ]
    dirty = [r for r in records if r["provenance"].get("git_dirty")]
    if dirty:
        lines.append(
            f"- **⚠ Uncommitted code**: {len(dirty)} of the records were made with uncommitted changes (`git_dirty`), "
            "so the code behind them cannot be checked out: "
            + ", ".join(f"{r['dataset']}/{r['method']}/seed{r['seed']}" for r in dirty)
        )
    if failed:
        lines.append(
            f"- **Failed units** (not in the tables): {len(failed)}: "
            + ", ".join(f"{r['dataset']}/{r['method']}/seed{r['seed']}" for r in failed)
        )
    if synthetic:
        lines.append(
            f"- **SYNTHETIC DATA**: {', '.join(synthetic)} are procedurally generated toy datasets, not medical images."
        )
    header, lines, n_flagged, n_one_class = lines, [], 0, 0
    for (preset, dataset), table in summary.groupby(["preset", "dataset"], sort=True):
        recs = [r for r in records if r["dataset"] == dataset and r["preset"] == preset]
        data = recs[0].get("data") or {}
        present = set(table["metric"]) - NOT_RANKED
        metrics = [m for m in METRIC_ORDER if m in present] + sorted(present - set(METRIC_ORDER))
        listed = list(dict.fromkeys(table.sort_values("method")["method"]))
        ref_rows = set(table.loc[table["is_reference"], "method"])
        priors = set(table.loc[table["is_prior"], "method"])
        methods = []
        for m in sorted(ref_rows) + [m for m in listed if m not in ref_rows and m not in priors]:
            methods += [m] + [
                p for p in listed if p in priors and p.startswith(m.split(" · ")[0] + PRIOR)
            ]
        no_reference = (
            []
            if ref_rows
            else [
                "",
                f"_No records of the reference `{reference}` for this table yet: no significance marks._",
            ]
        )
        floors = split_floors(recs)
        floor = metric_floors(floors)
        ranked = {m: _ranked_cells(table, m, floor.get(m)) for m in metrics}
        ranked, methods, floors = restoration_floors(recs, table, metrics, methods, floors, ranked)
        cells = {m: c for m, (c, _) in ranked.items()}
        n_flagged += sum(n for _, n in ranked.values())
        seeds = table[table["metric"] == metrics[0]].set_index("method")["n"]
        one_class = table[table["metric"] == metrics[0]].set_index("method")["one_class_seeds"]
        lines += [
            "",
            f"## {dataset} ({preset}){' — SYNTHETIC' if data.get('synthetic') else ''}",
            "",
            f"Task {recs[0].get('task')}, {_task_detail(recs[0])}; n = {data.get('n')}; split hash "
            f"`{data.get('split_hash')}`; exact duplicates across splits: {data.get('duplicates_across_splits')}; "
            f"files: {', '.join(f'{Path(k).name} (MD5 {v})' for k, v in (data.get('files') or {}).items()) or 'none'}; source: {data.get('source') or 'n/a'}."
            + "".join(
                f" ⚠ {note}."
                for note in sorted(
                    {n for r in recs for n in (r.get("data") or {}).get("notes") or []}
                )
            ),
            "",
            "| method | seeds | " + " | ".join(metrics) + " |",
            "|---|---|" + "---|" * len(metrics),
        ]
        for m in methods:
            name = f"{m} (ref)" if m in ref_rows else (f"{m} (its prior)" if m in priors else m)
            if one_class.get(m, 0):
                what = (
                    "collapsed or copying" if recs[0].get("task") == "generation" else "one class"
                )
                name += f" ⚠ {what} ({one_class[m]}/{seeds.get(m, 0)} seeds)"
                n_one_class += 1
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
        lines += no_reference
        lines += convergence_note(recs)
        lines += precision_check(frame, preset, dataset, test)
        lines += generation_extras(recs, methods, metrics)
        lines += per_class_fid_table(recs, methods)
    if any(r.get("task") == "restoration" for r in records):
        lines += survey_layout(summary, reference)
    if suite.task == "classification":
        header.append(
            f"- **Floors**: each table ends with the majority-class and chance rows of its test split; ⚠ marks "
            f"{n_flagged} cell(s) at or below their floor and {n_one_class} method row(s) with a seed that predicts "
            "one class for every test image: no result, never bold."
        )
    if any("floors" in (r.get("evaluation") or {}) for r in records):
        header.append(
            f"- **Floors**: each table ends with two zero-diversity generators made from the training split (each "
            "class's mean image; one training image per class), scored like the methods; ⚠ marks "
            f"{n_flagged} FID / KID / recall cell(s) no better than the better of them, and {n_one_class} method row(s) "
            "with a seed whose samples collapsed (diversity < 0.5 of the real images') or copy training images "
            "(novelty < 0.5): no result, never bold. The real-vs-real row (training images against test) is what a "
            "perfect generator would score."
        )
    header += restoration_floor_note(records, n_flagged)
    return "\n".join(header + lines) + "\n"


def _task_detail(record: dict) -> str:
    if record.get("task") == "restoration":
        return f"degradation {(record.get('evaluation') or {}).get('degradation')}, scores per image patch"
    return f"{len(record.get('class_names') or [])} classes"


def survey_layout(summary: pd.DataFrame, reference: str | None) -> list[str]:
    """The survey's Table 12 layout (denoising: RMSE, PSNR, SSIM) and the same with NMAE
    for RMSE: methods x (dataset: metric), means over seeds. The best learned method of
    each column is bold; the floors (``bench/tasks/restoration/scoring.py``) come last, never bold, and
    a learned method's cell no better than the best floor's carries ⚠ and is never bold."""
    from bench.tasks.restoration.scoring import FLOOR_METHODS, is_floor_method

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
            key=lambda m: (FLOOR_METHODS.index(_base_method(m)), m),
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
                floor = _best_floor({f: col[f] for f in floors if f in col.index}, higher)
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
                    text = (
                        "n/a"
                        if not np.isfinite(v)
                        else (
                            f"{v:.2f}" if m == "psnr" else f"{v:.4f}" if m == "rmse" else f"{v:.3f}"
                        )
                    )
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


def _base_method(label: str) -> str:
    """'nlm' of a table's variant label ('nlm · bf16', 'nlm [hash]')."""
    return label.split(" · ")[0].split(" [")[0]


def _best_floor(values: dict[str, float], higher_is_better: bool) -> float | None:
    """The best of the floors' finite means in the metric's direction (None without one)."""
    finite = [v for v in values.values() if np.isfinite(v)]
    return (max(finite) if higher_is_better else min(finite)) if finite else None


def restoration_floors(
    recs: list[dict],
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
    from bench.tasks.restoration.scoring import FLOOR_METHODS, is_floor_method

    is_floor = table["method"].map(is_floor_method)
    if recs[0].get("task") != "restoration" or not is_floor.any():
        return ranked, methods, floors
    labels = sorted(
        set(table.loc[is_floor, "method"]), key=lambda m: (FLOOR_METHODS.index(_base_method(m)), m)
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
        k: _best_floor({m: rows[m].get(k, np.nan) for m in labels}, METRICS.get(k).higher_is_better)
        for k in metrics
    }
    learned = table[~is_floor]
    ranked = {k: _ranked_cells(learned, k, best[k]) for k in metrics}
    return ranked, [m for m in methods if not is_floor_method(m)], {**floors, **rows}


def restoration_floor_note(records: list[dict], n_flagged: int) -> list[str]:
    """The header line of a leaderboard whose restoration tables have floor rows."""
    from bench.tasks.restoration.scoring import FLOOR_METHODS

    present = [
        f
        for f in FLOOR_METHODS
        if any(r.get("task") == "restoration" and r["method"] == f for r in records)
    ]
    if not present:
        return []
    return [
        f"- **Floors**: each restoration table ends with its training-free floors ({', '.join(f'`{f}`' for f in present)}: "
        "the degraded input, clipped to [0, 1], non-local means; nothing learned), never ranked; ⚠ marks "
        f"{n_flagged} cell(s) of other methods that do not beat the best floor's (PSNR / SSIM at or below it, RMSE / NMAE "
        "at or above it): no result, never bold."
    ]


def convergence_note(records: list[dict]) -> list[str]:
    """Methods whose validation score was best at their last epoch, on how many seeds:
    their training had not converged, and more budget may change their numbers."""
    last, seeds = {}, {}
    for r in records:
        sel = r.get("selection") or {}
        if sel.get("selection_metric") is None or sel.get("best_epoch") is None:
            continue  # no validation (the last weights are the result by design)
        seeds[r["method"]] = seeds.get(r["method"], 0) + 1
        last[r["method"]] = last.get(r["method"], 0) + (sel["best_epoch"] == sel.get("epochs_run"))
    hit = [f"{m} {n}/{seeds[m]} seeds" for m, n in sorted(last.items()) if n]
    return (
        [
            "",
            f"Not converged (best validation epoch = the last, so more budget may change the number): {', '.join(hit)}.",
        ]
        if hit
        else []
    )


def generation_extras(records: list[dict], methods: list[str], metrics: list[str]) -> list[str]:
    """Generation tables: the real-vs-real row, the extractor that made every number,
    and FID's bootstrap interval per seed (what difference between two FIDs is noise)."""
    from bench.tasks.generation.floors import REAL_VS_REAL

    evaluation = records[0].get("evaluation") or {}
    if "floors" not in evaluation:
        return []
    real = evaluation["floors"].get(REAL_VS_REAL, {})
    lines = [
        f"| _{REAL_VS_REAL} (real vs real)_ | | "
        + " | ".join(f"_{real[k]:.3f}_" if k in real else "" for k in metrics)
        + " |"
    ]
    infos = {
        json_key(r["evaluation"].get("extractor_info")) for r in records if r.get("evaluation")
    }
    for info in sorted(infos):
        i = dict(info)
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
                ": tables made with different extractors do not compare." if len(infos) > 1 else "."
            ),
        ]
    cis = {
        m: [
            f"[{r['evaluation']['fid_ci95'][0]:.1f}, {r['evaluation']['fid_ci95'][1]:.1f}]"
            for r in sorted(records, key=lambda r: r["seed"])
            if r["method"] == m.split(" · ")[0].split(" [")[0]
            and (r.get("evaluation") or {}).get("fid_ci95")
        ]
        for m in methods
    }
    if any(cis.values()):
        lines += [
            "",
            "FID, bootstrap 95 % interval over the test and generated images, per seed: "
            + "; ".join(f"{m} {', '.join(v)}" for m, v in cis.items() if v)
            + ".",
        ]
    return lines


def json_key(value):
    """A hashable, order-independent form of a (nested) mapping, for grouping."""
    if isinstance(value, dict):
        return tuple(sorted((k, json_key(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(json_key(v) for v in value)
    return value


def per_class_fid_table(records: list[dict], methods: list[str]) -> list[str]:
    """Generation records: FID per class (mean ± std over seeds), lowest bold (ODM Fig. 4)."""
    rows = {}
    for r in records:
        fid = ((r.get("per_class") or {}).get("test") or {}).get("fid")
        if fid is not None:
            rows.setdefault(r["method"], []).append([np.nan if v is None else v for v in fid])
    if not rows:
        return []
    classes = records[0].get("class_names") or [
        str(i) for i in range(len(next(iter(rows.values()))[0]))
    ]
    n_ref = (records[0].get("per_class") or {}).get("test", {}).get("n_reference")
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


def write_leaderboard(
    suite_name: str,
    results_dir="results",
    out_dir="leaderboards",
    reference: str | None = None,
    test: str = "ttest",
) -> list[Path]:
    suite = load_suite(suite_name)
    records = load_records(Path(results_dir), suite.name, status="ok")
    if not records:
        raise BenchError(
            f"no complete records for suite {suite.name!r} under {results_dir}/ (run `bench run --suite {suite.name}` first)"
        )
    failed = [r for r in load_records(Path(results_dir), suite.name, status="failed")]
    reference = reference or suite.reference
    frame = records_frame(records)
    summary = summarise(frame, reference, test)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / f"{suite.name}.md", out / f"{suite.name}.csv"
    md.write_text(render_markdown(suite, records, failed, summary, reference, test, frame))
    summary.assign(reference=reference, test=test).to_csv(csv, index=False, float_format="%.6g")
    return [md, csv]
