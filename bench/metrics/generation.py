"""Generation metrics, registered for what tables need to know of them (direction,
decimals, ranking); computed from Inception-style features by
bench.tasks.generation.fidelity (torch-fidelity), not here."""

from bench.metrics.metric import register_metric

TASKS = ("generation",)
COMPUTED_BY = "bench.tasks.generation.fidelity (torch-fidelity, on extractor features)"

for name, text, meta in (
    (
        "fid",
        "Frechet distance between generated and real feature statistics (torch-fidelity; lower is better)",
        {"higher_is_better": False, "decimals": 2, "headline": True},
    ),
    (
        "kid_mean",
        "kernel (polynomial) MMD between generated and real features, mean over subsets (lower is better)",
        {"higher_is_better": False},
    ),
    (
        "kid_std",
        "standard deviation of KID over subsets (spread, not a score)",
        {"higher_is_better": False, "ranked": False},
    ),
    (
        "precision",
        "fraction of generated images inside the real k-NN manifold (k = 3; fidelity)",
        {"headline": True},
    ),
    (
        "recall",
        "fraction of real images inside the generated k-NN manifold (k = 3; diversity)",
        {"headline": True},
    ),
    (
        "diversity",
        "within-class mean pairwise feature distance, generated / real (1 = as varied; near 0 = collapsed)",
        {},
    ),
    (
        "novelty",
        "distance to the nearest training image, generated / real held-out (1 = as new; near 0 = copies)",
        {},
    ),
    (
        "qwk_gap",
        "ordinal data: |QWK of generated images' grades - QWK of real images'| (extractor grades; lower is better)",
        {"higher_is_better": False},
    ),
    (
        "intensity_ratio",
        "mean pixel value, generated / reference images (1 = as bright; best at 1, so not ranked)",
        {"ranked": False},
    ),
):
    register_metric(name, text, tasks=TASKS, computed_by=COMPUTED_BY, **meta)
