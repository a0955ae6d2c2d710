"""Score stored samples again under the extractor a suite builds now.

FIDs from two feature spaces do not compare, and the trained extractor's weights (its
version) can differ between machines with the same seed (observed: a fresh machine
trained another version; float reduction order, e.g. the thread count, is the likely
cause). A record keeps its generated images (``seedN.npz``), so when the
extractor changes the samples are rescored rather than the generators retrained; the
record keeps what it was scored with before: each entry of its ``rescored`` list holds
the previous ``extractor_version`` and ``test`` metrics, and when (``at``) and by which
commit (``by_git_commit``) the record was rescored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.api.errors import BenchError
from bench.api.task import ScoringRun
from bench.engine.records import load_records, refuse_unpublished, write_record


class StoredSamples:
    """A generator that returns a record's stored images for the labels it was sampled for."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, where: str):
        self.images, self.labels, self.where = images, np.asarray(labels), where

    def sample(self, labels, ctx) -> np.ndarray:
        if not np.array_equal(np.asarray(labels), self.labels):
            raise BenchError(
                f"{self.where}: its stored samples were drawn for other labels than the reference split's now "
                "(another split or samples_per_class): rerun the unit instead of rescoring it"
            )
        return self.images


def rescore_generation(
    suite_name: str,
    preset_name: str,
    *,
    datasets: list[str] | None = None,
    data_dir: str | None = None,
    results_dir: str | Path = "results",
    work_dir: str | Path = "runs",
    force: bool = False,
    log=print,
) -> list[dict[str, Any]]:
    """Rescore every ok record of a generation suite's preset whose extractor version
    differs from the one the suite builds now (all of them with `force`); returns one
    line per record: its path, old and new extractor version and FID, or why skipped."""
    from bench.api.registry import TASKS
    from bench.engine.config import load_suite
    from bench.engine.planning import resolve_datasets
    from bench.engine.provenance import git_state, now
    from bench.engine.runner import data_block, make_context
    from bench.tasks.generation.evaluate import GenerationEval, shared_extractor
    from bench.train.device import make_accelerator

    suite = load_suite(suite_name)
    if suite.task != "generation":
        raise BenchError(
            f"bench rescore: suite {suite.name!r} is a {suite.task} suite, not generation"
        )
    preset = suite.preset(preset_name)
    results_dir, work_dir = Path(results_dir), Path(work_dir)
    refuse_unpublished(preset, results_dir)
    records = [
        r
        for r in load_records(results_dir, suite.name)
        if r.preset == preset.name and (not datasets or r.dataset in datasets)
    ]
    if not records:
        raise BenchError(
            f"bench rescore: no ok records of suite {suite.name!r}, preset {preset.name!r} in {results_dir}"
        )
    bundles, errors = resolve_datasets(
        suite, sorted({r.dataset for r in records}), data_dir, None, False, log
    )
    accelerator, _ = make_accelerator("auto", False)
    evaluation = suite.evaluation_for(preset)
    settings = GenerationEval.from_options(evaluation)
    task, shared, out = TASKS.get("generation"), {}, []
    for record in records:
        where = str(record.path)
        bundle = bundles.get(record.dataset)
        if bundle is None:
            out.append({"record": where, "status": f"skipped: {errors.get(record.dataset)}"})
            continue
        if not data_block(bundle).same_as(record.data):
            out.append({"record": where, "status": "skipped: made from other data (rerun it)"})
            continue
        stem = Path(where).with_suffix("")
        ctx = make_context(
            accelerator, record.seed, preset.budget, work_dir, work_dir / "rescore", log=log,
            data_id=bundle.split_hash, artifact_stem=stem,
        )  # fmt: skip
        old_version = record.extractor_info.get("version")
        # the extractor first (built once, then reused by the scoring) to skip what it scored already
        new_version = shared_extractor(settings, bundle, ctx, shared).info.get("version")
        if new_version == old_version and not force:
            out.append({"record": where, "status": f"skipped: already scored by {new_version}"})
            continue
        arrays = record.load_predictions()
        samples = StoredSamples(arrays["generated_images"], arrays["generated_labels"], where)
        scored = task.score(samples, bundle, ctx, ScoringRun(record.method, evaluation, shared))
        previous = {
            "extractor_version": old_version,
            "test": record.split_metrics("test"),
            "at": now(),
            "by_git_commit": git_state()["git_commit"],
        }
        record.take_scores(scored.fields)
        record.note_rescored(previous)
        write_record(stem, record)
        fid_old, fid_new = previous["test"]["fid"], record.metric("test", "fid")
        log(
            f"  rescored {where}: extractor {old_version} -> {new_version}, FID {fid_old:.3f} -> {fid_new:.3f}"
        )
        out.append(
            {
                "record": where,
                "status": "rescored",
                "old_version": old_version,
                "new_version": new_version,
                "old_fid": fid_old,
                "new_fid": fid_new,
            }
        )
    return out
