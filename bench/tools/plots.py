"""`bench plots`: a suite's figures from its records and their .npz only (the task draws
them: for classification, ROC curves, confusion matrices, training curves and t-SNE of
DiffMIC-v2's denoised label grids, bench/tasks/classification/plots.py)."""

from __future__ import annotations

from pathlib import Path

from bench.api.errors import BenchError
from bench.api.registry import TASKS
from bench.engine.config import load_suite
from bench.engine.records import load_records


def write_plots(suite_name: str, results_dir="results", out_dir="leaderboards/plots") -> list[Path]:
    suite = load_suite(suite_name)
    task = TASKS.get(suite.task)
    if not task.draws_figures:
        raise BenchError(f"bench plots draws no figures for {suite.task} suites ({suite.name!r})")
    records = load_records(Path(results_dir), suite.name, status="ok")
    if not records:
        raise BenchError(f"no complete records for suite {suite.name!r} under {results_dir}/")
    return task.figures(records, Path(out_dir) / suite.name)
