"""One aggregation of records for every table: a long frame (one row per record and test
metric; a record's priors as rows of their own) summarised per table, variant and metric
(mean, std, n, paired test against a reference, Holm-corrected) for leaderboards, and
`Cell`s (one config's per-seed values of a metric, flagged when no result) for the
papers' tables. What counts as no result is the task's (``task.degenerate``,
``task.split_floors``: bench/api/task.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.api.record import Record
from bench.api.registry import METRICS
from bench.report.floors import at_or_below, metric_floors
from bench.report.stats import MIN_SEEDS_FOR_TEST, holm, paired_ttest, wilcoxon

TESTS = {"ttest": paired_ttest, "wilcoxon": wilcoxon}


PRIOR = " ▸ "  # "diffmic_v2 ▸ DCG fused": a method's own prior, shown under it, never ranked


def records_frame(records: list[Record], task) -> pd.DataFrame:
    """One row per (record, test metric); a record's priors (``priors`` in the record:
    e.g. DiffMIC-v2's DCG branches) give rows of their own, flagged ``is_prior``."""
    rows = []
    for r in records:
        common = {
            "preset": r.preset,
            "dataset": r.dataset,
            "config_hash": r.config_hash,
            "precision": r.precision,
            "seed": r.seed,
        }
        entries = [(r.method, r.split_metrics("test"), bool(task.degenerate(r)), False)]
        for name, prior in r.priors.items():
            test = dict(prior.get("test") or {})
            share = test.pop("predicted_share", None)
            entries.append(
                (f"{r.method}{PRIOR}{name}", test, bool(share) and max(share) >= 1.0, True)
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


def ablation_base(method: str) -> str:
    """The method whose ablation `method` is (registered with ``preset_options_of``, e.g.
    diffmic_v2_c3 -> diffmic_v2), or '' for a method of its own."""
    from bench.api.errors import BenchError
    from bench.api.registry import METHODS

    try:
        return METHODS.get(method.split(PRIOR)[0]).preset_options_of or ""
    except BenchError:  # a record of a method no longer registered
        return ""


def with_ablation_tables(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with a ``table`` column: '' for the main table, the base method's name for
    the rows of its ablation variants, which get a table of their own (the paper's Table
    IV layout) where the base method's own rows (and its priors') are repeated as their
    reference."""
    if not len(frame):
        return frame.assign(table=[])
    base = {m: ablation_base(m) for m in frame["method"].unique()}
    frame = frame.assign(table=frame["method"].map(base))
    copies = []
    for preset, dataset, table in (
        frame.loc[frame["table"] != "", ["preset", "dataset", "table"]].drop_duplicates().to_numpy()
    ):
        own = frame[
            (frame["preset"] == preset)
            & (frame["dataset"] == dataset)
            & (frame["method"].str.split(PRIOR).str[0] == table)
        ]
        copies.append(own.assign(table=table))
    return pd.concat([frame, *copies], ignore_index=True) if copies else frame


def variant_labels(frame: pd.DataFrame) -> pd.Series:
    """'method'; 'method · bf16' where one method ran in several precisions in one table;
    'method [hash]' where it ran with several configs in one precision."""
    n_precisions = frame.groupby(["preset", "dataset", "method"])["precision"].transform("nunique")
    n_configs = frame.groupby(["preset", "dataset", "method", "precision"])[
        "config_hash"
    ].transform("nunique")
    label = frame["method"].where(n_precisions == 1, frame["method"] + " · " + frame["precision"])
    return label.where(n_configs == 1, label + " [" + frame["config_hash"] + "]")


def summarise(
    frame: pd.DataFrame, reference: str | None | dict, test: str = "ttest"
) -> pd.DataFrame:
    """Per (preset, dataset, table, variant, metric): mean, std, n and the paired p-value
    vs reference: a method, or a method per table, {(preset, dataset): method or None}; an
    ablation table (``table``: its base method, `with_ablation_tables`) tests against its
    base method."""
    frame = frame.copy()
    if "table" not in frame:
        frame["table"] = ""
    frame["variant"] = variant_labels(frame) if len(frame) else []
    out = []
    tables = frame.groupby(["preset", "dataset", "table", "metric"], sort=False)
    for (preset, dataset, table, metric), g in tables:
        ref_name = reference.get((preset, dataset)) if isinstance(reference, dict) else reference
        ref_name = table or ref_name
        ref = g[g["method"] == ref_name]
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
                and v["method"].iloc[0] == ref_name
                and set(v["config_hash"]) == {ref_hash}
            )
            is_prior = bool(v["is_prior"].iloc[0])
            against = ref_by_seed if ref_name and not is_reference else None
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
                    "table": table,
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
        groups = summary.groupby(["preset", "dataset", "table", "metric"], sort=False).groups
        for idx in groups.values():
            summary.loc[idx, "p_value"] = holm(summary.loc[idx, "p_raw"].to_numpy())
    return summary


def json_key(value):
    """A hashable, order-independent form of a (nested) mapping, for grouping."""
    if isinstance(value, dict):
        return tuple(sorted((k, json_key(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(json_key(v) for v in value)
    return value


def base_method(label: str) -> str:
    """'nlm' of a table's variant label ('nlm · bf16', 'nlm [hash]')."""
    return label.split(" · ")[0].split(" [")[0]


def record_labels(records: list[Record]) -> list[str]:
    """Each record's table row, as `variant_labels` names it ('method', 'method · bf16',
    'method [hash]'): what a note or a row's extra line about that row must group by."""
    frame = pd.DataFrame(
        [
            {
                "preset": r.preset,
                "dataset": r.dataset,
                "method": r.method,
                "precision": r.precision,
                "config_hash": r.config_hash,
            }
            for r in records
        ],
        columns=["preset", "dataset", "method", "precision", "config_hash"],
    )
    return list(variant_labels(frame)) if records else []


def records_by_row(records: list[Record]) -> dict[str, list[Record]]:
    """A table's records grouped by their row (`record_labels`), each row's by seed."""
    rows: dict[str, list[Record]] = {}
    for label, r in zip(record_labels(records), records):
        rows.setdefault(label, []).append(r)
    return {label: sorted(rs, key=lambda r: r.seed) for label, rs in rows.items()}


PAPER_FEATURE_SPACE = (
    "inception-v3-compat"  # the papers' FID/KID/precision/recall (TF-FID Inception)
)


@dataclass
class Cell:
    """One of our numbers: per-seed values of a (dataset, method, metric)."""

    by_seed: dict[int, float]
    flag: str = (
        ""  # why the number is no result (at or below its floor, a one-class model), if it is not
    )
    feature_space: str | None = (
        None  # generation metrics: the extractor whose features they are computed in
    )

    @property
    def flagged(self) -> bool:
        return bool(self.flag)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.by_seed.values())))

    @property
    def std(self) -> float:
        return (
            float(np.std(list(self.by_seed.values()), ddof=1))
            if len(self.by_seed) > 1
            else float("nan")
        )


def pick_preset(records: list[Record], wanted: str | None) -> str | None:
    """The forced preset, else the one with the most records here (ties: full first)."""
    if wanted:
        return wanted
    counts: dict[str, int] = {}
    for r in records:
        counts[r.preset] = counts.get(r.preset, 0) + 1
    return max(counts, key=lambda p: (counts[p], p == "full")) if counts else None


def our_cells(
    records: list[Record], dataset: str, method: str, metric: str, preset: str | None, task
) -> Cell | None:
    """Our per-seed values of a metric, flagged when the mean does not beat the metric's
    floor on the split or a seed's model predicts one class (the task's floors and degenerate seeds)."""
    candidates = [
        r for r in records if r.dataset == dataset and r.method == method and r.preset == preset
    ]
    if not candidates:
        return None
    # one config (and so one precision) per cell: the one with the most seeds, fp32 first on ties
    counts = {
        h: sum(r.config_hash == h for r in candidates) for h in {r.config_hash for r in candidates}
    }
    precision = {r.config_hash: r.precision for r in candidates}
    chosen = max(sorted(counts), key=lambda h: (counts[h], precision[h] == "fp32"))
    by_seed, used = {}, []
    for r in candidates:
        if r.config_hash == chosen:
            v = r.metric("test", metric)
            if v is not None:
                by_seed[r.seed] = float(v)
                used.append(r)
    if not by_seed:
        return None
    spaces = {r.extractor_name for r in used} - {None}
    cell = Cell(by_seed, feature_space=", ".join(sorted(spaces)) or None)
    degenerate = [task.degenerate(r) for r in used]
    floor = metric_floors(task.split_floors(used), task.floored_metrics).get(metric)
    higher = METRICS.get(metric).higher_is_better
    if at_or_below(cell.mean, floor, higher):
        cell.flag = f"at or {'below' if higher else 'above'} the {metric} floor {floor:.3f}"
    elif any(degenerate):
        cell.flag = f"{sum(map(bool, degenerate))} of {len(used)} {task.degenerate_seeds}"
    return cell
