"""Generation: class-conditional generators sample images for given labels."""

from __future__ import annotations

import dataclasses

from bench.api.method import RunContext, Scored
from bench.api.record import Record
from bench.api.task import ScoringRun, Task, register_task


@register_task
class GenerationTask(Task):
    """Images sampled for the reference split's labels, scored in a trained feature space."""

    name = "generation"
    key_metrics = ("fid",)
    floored_metrics = ("fid", "kid_mean", "recall")  # precision: a class-mean image is "precise"
    degenerate_label = "collapsed or copying"
    degenerate_seeds = "seeds' samples collapsed or copy training images"

    def score(self, method, bundle, ctx: RunContext, run: ScoringRun) -> Scored:
        """Sample and score against the reference split with the dataset's extractor
        (trained once per dataset, split and settings in a suite run)."""
        from bench.tasks.generation.evaluate import (
            GenerationEval,
            evaluate_generator,
            shared_extractor,
        )

        settings = GenerationEval.from_options(run.evaluation)

        def extractor(s: GenerationEval):
            return shared_extractor(s, bundle, ctx, run.shared)

        spread = {
            seed: extractor(dataclasses.replace(settings, extractor_seed=seed, spread_seeds=()))
            for seed in settings.spread_seeds
            if seed != settings.extractor_seed
        }
        result = evaluate_generator(method, bundle, ctx, settings, extractor(settings), spread)
        fields = {
            k: result[k]
            for k in ("metrics", "per_class", "evaluation", "ordinal_consistency")
            if k in result
        }
        n = result["evaluation"]["n_generated"]
        return Scored(fields, result["arrays"], n, result["sample_s"])

    def infer(self, method, split, ctx: RunContext):
        return method.sample(split.labels, ctx)

    def check_outputs(self, outputs, split, spec, method_name: str):
        from bench.tasks.generation.evaluate import check_samples

        return check_samples(outputs, len(split), spec, method_name)

    def random_data(self, size, channels, classes, n, rng, source):
        from bench.tasks.classification import random_labelled_images

        return random_labelled_images(size, channels, classes, n, rng, source)

    def degenerate(self, record: Record) -> str:
        from bench.tasks.generation.floors import degenerate_generator

        return degenerate_generator(record)

    def split_floors(self, records):
        from bench.tasks.generation.floors import generation_floors

        return generation_floors(records)

    def table_extras(self, records, methods, metrics):
        from bench.tasks.generation.report import (
            generation_extras,
            ordinal_table,
            per_class_fid_table,
        )

        return (
            generation_extras(records, methods, metrics)
            + per_class_fid_table(records, methods)
            + ordinal_table(records, methods)
        )

    def header_notes(self, records, n_flagged, n_one_class):
        from bench.tasks.generation.report import generation_floor_note

        return generation_floor_note(records, n_flagged, n_one_class)
