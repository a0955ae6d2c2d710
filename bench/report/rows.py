"""The rows of a leaderboard table and their labels: each method followed by its priors,
a prior that several methods share (the same predictions: DiffMIC-v2's ablations share its
DCG) printed once, and a method whose predictions are a prior's (DiffMIC-v2's C1 is its
DCG's global branch) labelled as that prior."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report.aggregate import PRIOR


def signatures(frame: pd.DataFrame) -> dict[str, tuple]:
    """Each variant's per-seed test values (rounded to 9 digits): two rows with the same
    signature are the same predictions (a prior shared by several methods, or a variant
    that is its prior: DiffMIC-v2's C1 is its DCG's global branch)."""
    finite = frame[np.isfinite(frame["value"])]
    return {
        label: tuple(sorted(zip(g["seed"], g["metric"], np.round(g["value"], 9))))
        for label, g in finite.groupby("variant")
    }


def table_rows(table: pd.DataFrame, frame: pd.DataFrame, base_last: bool):
    """The rows of one table in order, each method followed by its priors, their labels
    {variant: label}, and the method rows that are a prior. A prior several methods share (the same predictions) is
    printed once: under its first method, or after all of them when every method has it
    (the ablations of one method share its DCG), then as the reference row's own."""
    listed = list(dict.fromkeys(table.sort_values("method")["method"]))
    priors = [m for m in listed if table.loc[table["method"] == m, "is_prior"].any()]
    refs = [m for m in listed if table.loc[table["method"] == m, "is_reference"].any()]
    own = [m for m in listed if m not in priors and m not in refs]
    order = own + refs if base_last else refs + own
    sig = signatures(frame)
    priors_of = {m: [p for p in priors if p.startswith(m.split(" · ")[0] + PRIOR)] for m in order}
    owners: dict[tuple, list[str]] = {}  # a prior's predictions -> the methods that have it
    for m in order:
        for p in priors_of[m]:
            owners.setdefault(sig.get(p, (p,)), []).append(m)
    everyone = {k for k, v in owners.items() if len(order) > 1 and set(v) == set(order)}
    rows, labels, printed, identical = [], {}, set(), set()
    for m in order:
        rows.append(m)
        same = next((p for p in priors if sig.get(p) == sig.get(m) and m in sig), None)
        labels[m] = (f"{m} (ref)" if m in refs else m) + (
            f" (= {same.split(PRIOR)[1]}: the same predictions)" if same else ""
        )
        identical |= {m} if same else set()
        for p in priors_of[m]:
            key = sig.get(p, (p,))
            if key in everyone or key in printed:
                continue
            printed.add(key)
            others = [o for o in owners[key] if o != m]
            rows.append(p)
            labels[p] = f"{p} (its prior{'; the same for ' + ', '.join(others) if others else ''})"
    for key in dict.fromkeys(sig.get(p, (p,)) for m in order for p in priors_of[m]):
        if key not in everyone:
            continue
        owner = next((m for m in refs if m in owners[key]), owners[key][0])
        p = next(p for p in priors_of[owner] if sig.get(p, (p,)) == key)
        rows.append(p)
        labels[p] = f"{p} (the prior of every row)"
    return rows, labels, identical
