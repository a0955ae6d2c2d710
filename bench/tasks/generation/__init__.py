"""Generation: class-conditional generators sample images for given labels."""

from __future__ import annotations

from bench.api.method import RunContext, Scored
from bench.api.task import ScoringRun, Task, register_task


@register_task
class GenerationTask(Task):
    """Images sampled for the reference split's labels, scored in a trained feature space."""

    name = "generation"

    def score(self, method, bundle, ctx: RunContext, run: ScoringRun) -> Scored:
        """Sample and score against the reference split with the dataset's extractor
        (trained once per dataset, split and settings in a suite run)."""
        from bench.tasks.generation.evaluate import (
            GenerationEval,
            evaluate_generator,
            feature_extractor,
        )

        settings = GenerationEval.from_options(run.evaluation)
        key = ("extractor", bundle.spec.name, bundle.split_hash, settings)
        if key not in run.shared:
            run.shared[key] = feature_extractor(
                settings, bundle, ctx.accelerator, ctx.cache_dir, ctx.log
            )
        result = evaluate_generator(method, bundle, ctx, settings, run.shared[key])
        fields = {k: result[k] for k in ("metrics", "per_class", "evaluation")}
        n = result["evaluation"]["n_generated"]
        return Scored(fields, result["arrays"], n, result["sample_s"])

    def infer(self, method, split, ctx: RunContext):
        return method.sample(split.labels, ctx)

    def random_data(self, size, channels, classes, n, rng, source):
        from bench.tasks.classification import random_labelled_images

        return random_labelled_images(size, channels, classes, n, rng, source)
