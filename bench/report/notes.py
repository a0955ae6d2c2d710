"""Notes under a leaderboard table: what its numbers do not say by themselves (training
that had not converged, a diffusion stage that did not beat its floor, record files that
could not be read)."""

from __future__ import annotations

from pathlib import Path

from bench.api.record import Record
from bench.report.aggregate import record_labels


def convergence_note(records: list[Record]) -> list[str]:
    """Methods whose validation score was best at their last epoch, on how many seeds:
    their training had not converged, and more budget may change their numbers."""
    last, seeds = {}, {}
    for row, r in zip(record_labels(records), records):
        sel = r.selection
        if sel.selection_metric is None or sel.best_epoch is None:
            continue  # no validation (the last weights are the result by design)
        seeds[row] = seeds.get(row, 0) + 1
        last[row] = last.get(row, 0) + (sel.best_epoch == sel.epochs_run)
    hit = [f"{m} {n}/{seeds[m]} seeds" for m, n in sorted(last.items()) if n]
    return (
        [
            "",
            f"Not converged (best validation epoch = the last, so more budget may change the number): {', '.join(hit)}.",
        ]
        if hit
        else []
    )


def noise_floors(block) -> list[dict]:
    """Every ``noise_floor`` block in a record's selection (a method's own diffusion
    training, or a stage of it: D-Cube's stage 1 under ``stage1``)."""
    if not isinstance(block, dict):
        return []
    found = [block["noise_floor"]] if isinstance(block.get("noise_floor"), dict) else []
    return found + [f for k, v in block.items() if k != "noise_floor" for f in noise_floors(v)]


def untrained_seeds(records: list[Record]) -> dict[str, tuple[int, int]]:
    """table row (`record_labels`) -> (seeds whose diffusion stage did not beat its noise
    floor, seeds that recorded one), for the rows with at least one such seed."""
    seen, below = {}, {}
    for row, r in zip(record_labels(records), records):
        floors = noise_floors(r.selection.to_dict())
        if floors:
            seen[row] = seen.get(row, 0) + 1
            below[row] = below.get(row, 0) + any(not f["beaten"] for f in floors)
    return {m: (n, seen[m]) for m, n in below.items() if n}


def untrained_note(records: list[Record]) -> list[str]:
    """Methods with a diffusion stage whose validation noise loss did not beat the
    per-pixel linear denoiser's on the same probe (bench/nn/noise_floor.py), on how many
    of the seeds that recorded it (their rows carry the same ⚠)."""
    hit = [f"{m} {n}/{seen} seeds" for m, (n, seen) in sorted(untrained_seeds(records).items())]
    return (
        [
            "",
            "⚠ Untrained diffusion stage (its validation noise loss not below a per-pixel linear "
            f"denoiser's on the same images, timesteps and noises): {', '.join(hit)}.",
        ]
        if hit
        else []
    )


def unusable_note(problems: list[tuple[str, str]], dataset: str) -> list[str]:
    """The record files of `dataset` that could not be read (results/<suite>/<dataset>/...):
    left out of its tables, named under each with the reason."""
    mine = [(p, why) for p, why in problems if Path(p).parts[-4:-3] == (dataset,)]
    if not mine:
        return []
    return [
        "",
        f"⚠ {len(mine)} record file(s) of {dataset} could not be used and are not in its tables: "
        + "; ".join(f"`{p}` ({why})" for p, why in mine)
        + ".",
    ]
