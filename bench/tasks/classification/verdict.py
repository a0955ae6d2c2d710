"""The verdict that opens each classification table: does a method beat the table's
reference (and its own prior), by how much, and how sure is that?

For each method row: the mean difference in test AUROC over the seeds both have, with
two 95 % intervals. DeLong's (bench/report/delong.py) compares the two models on the same
test images, per seed, combined over the seeds: the uncertainty of a finite test set.
The seed-paired t interval (bench/report/stats.py) compares the per-seed AUROCs: the
uncertainty of training. A difference is called ("better", "worse") only when both
intervals exclude 0; when neither does, "no detectable difference"; otherwise the
sentence says which one does. The p-values are per comparison, not corrected.
"""

from __future__ import annotations

import numpy as np

from bench.report.aggregate import PRIOR
from bench.report.delong import delong_difference, macro_auroc_influence
from bench.report.stats import paired_t_interval

HEADER = "**Verdict** (Δ test AUROC, row minus comparator; 95 % intervals over the test images (DeLong) and over the seeds (t)):"
#: the leaderboard header's explanation of every verdict block
EXPLANATION = (
    "- **Verdict** (opening each table): the test AUROC of each row minus the one it is compared with "
    "(the table's reference, and its own prior), mean over their matched seeds, with two 95 % intervals: "
    "DeLong's test on the same test images, per seed and combined over the seeds (what another draw of "
    "test images could change, the trained models held fixed), and the seed-paired t interval (what "
    "retraining could change). A difference is called better or worse only when both intervals exclude 0; "
    "p-values are per comparison, not corrected. A dataset holding another's images at another size "
    "(the same split, e.g. `breastmnist_64`) ends its table with each method against itself there, in "
    "the same form: what the image size changes."
)


def main_prior(names) -> str | None:
    """The prior a method is compared with: its fused prediction where it has several
    (DiffMIC's and DiffMIC-v2's DCG), else its only one."""
    names = list(names)
    return next((n for n in names if "fused" in n.lower()), names[0] if names else None)


def sentence(delong: dict, seeds: dict) -> str:
    def side(ci):
        lo, hi = ci
        return 0 if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0 <= hi else np.sign(lo)

    d, t = side((delong["ci_low"], delong["ci_high"])), side((seeds["ci_low"], seeds["ci_high"]))
    has_t = np.isfinite(seeds["ci_low"])
    word = {1: "better", -1: "worse"}
    if d and d == t:
        return word[d]
    if not d and not t:
        return "no detectable difference"
    if d and not has_t:
        return f"{word[d]} on these test images (one seed: no interval over training)"
    if d and not t:
        return f"{word[d]} on these test images, not consistently across seeds"
    if t and not d:
        return f"{word[t]} across seeds, within what the test set could change"
    return "contradictory intervals"


def _fmt(v: float, signed: bool = True) -> str:
    return "–" if not np.isfinite(v) else (f"{v:+.3f}" if signed else f"{v:.3f}")


def _p(v: float) -> str:
    return "–" if not np.isfinite(v) else (f"{v:.2g}" if v >= 0.001 else "< 0.001")


def compare(a: dict, b: dict, key_a: str, key_b: str) -> tuple[dict, dict] | str:
    """DeLong and seed-paired t of AUROC(a[key_a]) - AUROC(b[key_b]) over the seeds of
    both (`a`, `b`: {seed: arrays}); or why they cannot be compared."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return "no matched seeds"
    labels, task = a[seeds[0]]["test_labels"], a[seeds[0]]["task"]
    pairs, auc_a, auc_b = [], [], []
    for s in seeds:
        if not (
            np.array_equal(a[s]["test_ids"], b[s]["test_ids"])
            and np.array_equal(a[s]["test_ids"], a[seeds[0]]["test_ids"])
        ):
            return "not scored on the same test images"
        pa, pb = a[s][key_a].astype(np.float64), b[s][key_b].astype(np.float64)
        pairs.append((pa, pb))
        auc_a.append(macro_auroc_influence(labels, pa, task)[0])
        auc_b.append(macro_auroc_influence(labels, pb, task)[0])
    return delong_difference(labels, pairs, task), paired_t_interval(auc_a, auc_b)


def stored_arrays(records, frame, rows) -> dict[str, dict[int, dict]]:
    """{row label: {seed: stored predictions}} of the method rows `rows` (variant labels,
    as `frame`'s ``variant``) whose records kept their test predictions."""
    own = frame[~frame["is_prior"]].drop_duplicates(["method", "config_hash", "precision"])
    label_of = {
        (m, h, p): v
        for m, h, p, v in zip(own["method"], own["config_hash"], own["precision"], own["variant"])
    }
    arrays: dict[str, dict[int, dict]] = {}
    for r in records:
        label = label_of.get((r.method, r.config_hash, r.precision))
        if label in rows and r.predictions_path:
            try:
                stored = r.load_predictions()
            except (OSError, ValueError):
                continue
            if {"test_probs", "test_labels", "test_ids"} <= set(stored):
                arrays.setdefault(label, {})[r.seed] = {**stored, "task": r.task}
    return arrays


def verdict_row(label: str, name: str, mine: dict, theirs: dict, key: str) -> str:
    """One verdict line: `label`'s test AUROC minus `theirs`' (under `key`), named `name`."""
    try:
        result = compare(mine, theirs, "test_probs", key)
    except ValueError as exc:  # e.g. a class missing from the test split
        result = str(exc)
    if isinstance(result, str):
        return f"| {label} | {name} | | | | | | | n/a: {result} |"
    delong, seeds = result
    return (
        f"| {label} | {name} | {delong['seeds']} | {_fmt(delong['difference'])} | "
        f"[{_fmt(delong['ci_low'])}, {_fmt(delong['ci_high'])}] | {_p(delong['p_value'])} | "
        f"[{_fmt(seeds['ci_low'])}, {_fmt(seeds['ci_high'])}] | {_p(seeds['p_value'])} | "
        f"{sentence(delong, seeds)} |"
    )


TABLE_HEAD = [
    "| method | against | seeds | Δ AUROC | 95 % CI (DeLong) | p (DeLong) | 95 % CI (seeds, t) | p (t) | verdict |",
    "|---|---|---|---|---|---|---|---|---|",
]


def verdict_lines(records, frame, rows, reference, with_priors=True) -> list[str]:
    """The verdict block of one table: `rows` (variant labels, as `frame`'s ``variant``)
    against the `reference` row's label and, `with_priors`, against each one's prior."""
    arrays = stored_arrays(records, frame, rows)
    out = []
    for label in rows:
        mine = arrays.get(label, {})
        if not mine:
            continue
        against = []
        if reference and label != reference and reference in arrays:
            against.append((f"`{reference}`", arrays[reference], "test_probs"))
        prior = main_prior(
            k[len("test_prior_") :]
            for k in next(iter(mine.values()))
            if k.startswith("test_prior_")
        )
        if with_priors and prior:
            against.append((f"its prior{PRIOR}{prior}", mine, f"test_prior_{prior}"))
        out += [verdict_row(label, name, mine, theirs, key) for name, theirs, key in against]
    if not out:
        alone = f"only `{rows[0]}`" if len(rows) == 1 else "no stored test predictions to pair"
        return ["", f"**Verdict**: nothing to compare here yet ({alone})."]
    return ["", HEADER, "", *TABLE_HEAD, *out]


def other_size_lines(records, frame, rows, base_records, base_frame, base_rows, base) -> list[str]:
    """Each method row of this table (`rows`) against the same row of dataset `base`, the
    same images at another size (same split, labels and test ids): what the image size
    changes, with the verdict's two intervals. Rows are matched by their label."""
    shared = [label for label in rows if label in base_rows]
    mine = stored_arrays(records, frame, shared)
    theirs = stored_arrays(base_records, base_frame, shared)
    out = [
        verdict_row(label, f"itself on `{base}`", mine[label], theirs[label], "test_probs")
        for label in shared
        if label in mine and label in theirs
    ]
    if not out:
        return []
    return [
        "",
        f"**Against `{base}`**, the same images at another size (Δ test AUROC, this table's row "
        f"minus the same method on `{base}`; the same test images, so DeLong pairs them; seeds matched):",
        "",
        *TABLE_HEAD,
        *out,
    ]
