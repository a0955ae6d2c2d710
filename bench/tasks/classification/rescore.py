"""Calibrate stored classification records without retraining.

A record keeps its val and test probabilities (and its priors') in its ``.npz``, so the
temperature scaling that scoring now does after model selection
(bench/tasks/classification/calibration.py) is applied to older records from those
arrays: the same function, the same numbers a new run of the unit would store. The
record says so in its ``rescored`` list (what was added, when, by which commit and
command); its metrics as trained are not touched."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench.api.errors import BenchError
from bench.engine.records import load_records, refuse_unpublished, write_record
from bench.tasks.classification.calibration import VERSION, apply_calibration, calibration_fields


def rescore_classification(
    suite_name: str,
    preset_name: str | None = None,
    *,
    datasets: list[str] | None = None,
    results_dir: str | Path = "results",
    force: bool = False,
    log=print,
) -> list[dict[str, Any]]:
    """Calibrate every ok record of a classification suite (one preset, or all) that has
    no calibration of the current version (every one with `force`); one line per record."""
    from bench.engine.config import load_suite
    from bench.engine.provenance import git_state, now

    suite = load_suite(suite_name)
    if suite.task != "classification":
        raise BenchError(
            f"bench rescore: suite {suite.name!r} is a {suite.task} suite, not classification"
        )
    results_dir = Path(results_dir)
    records = [
        r
        for r in load_records(results_dir, suite.name)
        if (preset_name is None or r.preset == preset_name)
        and (not datasets or r.dataset in datasets)
    ]
    if not records:
        raise BenchError(
            f"bench rescore: no ok records of suite {suite.name!r}"
            f"{f', preset {preset_name!r}' if preset_name else ''} in {results_dir}"
        )
    for preset in sorted({r.preset for r in records}):
        refuse_unpublished(suite.preset(preset), results_dir)
    git, out = git_state(), []
    for record in records:
        where = str(record.path)
        if (record.payload.get("calibration") or {}).get("version") == VERSION and not force:
            out.append({"record": where, "status": "skipped: calibrated already"})
            continue
        try:
            fields = calibration_fields(record.load_predictions(), record.task)
        except (OSError, KeyError, ValueError) as exc:
            out.append(
                {"record": where, "status": f"skipped: its predictions do not serve ({exc})"}
            )
            continue
        entry = {
            "added": f"calibration v{VERSION} (temperature scaling fitted on val)",
            "at": now(),
            "by_git_commit": git["git_commit"],
            "by_git_dirty": git["git_dirty"],
            "command": " ".join(sys.argv),
        }
        record.take_scores(apply_calibration({"metrics": record.metrics, **record.payload}, fields))
        record.note_rescored(entry)
        write_record(record.path.with_suffix(""), record)
        block = fields["calibration"]
        log(
            f"  calibrated {where}: T = {block['temperature']:.3f}, test ECE "
            f"{block['ece']['test'][0]:.3f} -> {block['ece']['test'][1]:.3f}"
        )
        out.append(
            {
                "record": where,
                "status": "rescored",
                "temperature": block["temperature"],
                "ece": block["ece"]["test"],
            }
        )
    return out
