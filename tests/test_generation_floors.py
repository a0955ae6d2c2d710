"""Generation numbers a researcher can read: a seeded extractor, floors, diversity and
memorisation, and FID's bootstrap interval, on real RetinaMNIST images."""

import numpy as np
import pytest
import torch
from conftest import real_data_dir

from bench.api.dataset import DatasetBundle, SplitData, validate_bundle
from bench.data.load import load_bundle
from bench.tasks.generation.evaluate import GenerationEval, feature_extractor
from bench.tasks.generation.fidelity import extract_features, fidelity_metrics
from bench.tasks.generation.floors import (
    fid_bootstrap_interval,
    floor_image_sets,
    frechet_distance,
    sample_diagnostics,
    within_class_diversity,
)
from bench.train.device import make_accelerator

pytestmark = pytest.mark.usefixtures("one_thread")
SETTINGS = GenerationEval(
    extractor_epochs=1, extractor_small_stem=False, kid_subset_size=20, kid_subsets=10
)


@pytest.fixture(scope="module")
def retina():
    full = load_bundle(
        "retinamnist", data_dir=real_data_dir()
    )  # module scope: before isolated_env sets the dir
    cut = {
        "train": 384,
        "val": 64,
        "test": 160,
    }  # enough for every class, small enough to train three extractors
    splits = {
        k: SplitData(v.images[: cut[k]], v.labels[: cut[k]], v.ids[: cut[k]])
        for k, v in full.splits.items()
    }
    return validate_bundle(DatasetBundle(full.spec, splits, full.files))


@pytest.fixture(scope="module")
def extractor(retina, tmp_path_factory):
    return feature_extractor(
        SETTINGS,
        retina,
        make_accelerator("fp32", cpu=True)[0],
        tmp_path_factory.mktemp("cache"),
        lambda m: None,
    )


def test_the_extractor_is_the_same_whatever_ran_before_it(retina, extractor, tmp_path):
    torch.manual_seed(123)
    torch.randn(1000)  # another run order: the global stream is elsewhere now
    np.random.seed(7)
    again = feature_extractor(
        SETTINGS, retina, make_accelerator("fp32", cpu=True)[0], tmp_path, lambda m: None
    )
    assert (
        again.info["version"] == extractor.info["version"] and again.info["trained_on"]["seed"] == 0
    )
    state = torch.get_rng_state()
    other = feature_extractor(
        GenerationEval(**{**SETTINGS.__dict__, "extractor_seed": 1}),
        retina,
        make_accelerator("fp32", cpu=True)[0],
        tmp_path / "s1",
        lambda m: None,
    )
    assert other.info["version"] != extractor.info["version"]  # the seed is what decides
    assert torch.equal(torch.get_rng_state(), state)  # and the caller's stream is left as it was


def test_floors_beat_noise_and_diversity_finds_collapse(retina, extractor):
    test, train = retina.splits["test"], retina.splits["train"]
    real = extract_features(test.images, extractor)
    train_f = extract_features(train.images, extractor)
    labels = np.sort(test.labels)
    sets = floor_image_sets(train, labels, seed=0)
    noise = np.random.default_rng(0).integers(0, 256, size=test.images.shape, dtype=np.uint8)
    fid = {
        name: fidelity_metrics(
            real, extract_features(imgs, extractor), kid_subset_size=20, kid_subsets=10
        )["fid"]
        for name, imgs in {**sets, "noise": noise}.items()
    }
    # (with a 1-epoch extractor the class-mean image may even score below real images:
    # which is why a generator's FID needs these rows beside it)
    assert (
        max(
            fid["class-mean image"],
            fid["one training image per class"],
            fid["real training images"],
        )
        < fid["noise"]
    ), fid
    diag = {
        name: sample_diagnostics(
            real, test.labels, extract_features(imgs, extractor), labels, train_f
        )
        for name, imgs in sets.items()
    }
    assert (
        diag["class-mean image"]["diversity"]
        < 0.05
        < 0.5
        < diag["real training images"]["diversity"]
    ), diag
    assert (
        diag["real training images"]["novelty"] < 0.05
    )  # training images are their own nearest neighbours
    assert within_class_diversity(real, test.labels) > 0


def test_fid_matches_torch_fidelity_on_real_features(retina, extractor):
    real = extract_features(retina.splits["test"].images, extractor)
    fake = extract_features(retina.splits["train"].images[: len(real)], extractor)
    ref = fidelity_metrics(real, fake, kid_subset_size=20, kid_subsets=10)["fid"]
    assert frechet_distance(real, fake) == pytest.approx(ref, rel=1e-6)


def test_fid_bootstrap_interval_holds_the_estimate_and_widens_with_fewer_images():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(800, 16, generator=g), torch.randn(800, 16, generator=g) + 0.5  # FID about 4
    widths = []
    for n in (800, 100):
        lo, hi = fid_bootstrap_interval(a[:n], b[:n], n_boot=200, seed=0)
        assert lo <= frechet_distance(a[:n], b[:n]) <= hi
        widths.append(hi - lo)
    assert widths[1] > 2 * widths[0]
    assert fid_bootstrap_interval(a[:100], b[:100], n_boot=50, seed=1) == fid_bootstrap_interval(
        a[:100], b[:100], n_boot=50, seed=1
    )


def test_fid_is_also_computed_under_other_extractor_seeds(retina, extractor, tmp_path):
    """`spread_seeds`: the same samples scored by an extractor of another seed; the FIDs
    differ (that difference is the extractor's), the main one is the record's FID."""
    from bench.api.method import Budget, RunContext
    from bench.tasks.generation.evaluate import evaluate_generator

    accelerator = make_accelerator("fp32", cpu=True)[0]
    settings = GenerationEval(**{**SETTINGS.__dict__, "bootstrap": 0, "spread_seeds": (1,)})
    other = feature_extractor(
        GenerationEval(**{**SETTINGS.__dict__, "extractor_seed": 1}),
        retina,
        accelerator,
        tmp_path / "cache",
        lambda m: None,
    )
    train = retina.splits["train"]

    class Copies:  # training images of the asked classes: a real-looking generator
        def sample(self, labels, ctx):
            pools = {c: train.images[train.labels == c] for c in np.unique(labels)}
            return np.stack([pools[c][i % len(pools[c])] for i, c in enumerate(labels)])

    ctx = RunContext(accelerator, 0, Budget(), tmp_path, lambda m: None, False)
    out = evaluate_generator(Copies(), retina, ctx, settings, extractor, {1: other})
    by_seed = out["evaluation"]["fid_by_extractor_seed"]
    assert set(by_seed) == {"0", "1"} and by_seed["0"] == out["metrics"]["test"]["fid"]
    assert all(np.isfinite(v) and v >= 0 for v in by_seed.values()) and by_seed["0"] != by_seed["1"]


def as_records(dicts):
    from bench.api.record import Record

    unit = {
        "suite": "gen",
        "preset": "smoke",
        "dataset": "retinamnist",
        "config_hash": "h",
        "status": "ok",
    }
    return [Record.from_dict({**unit, **d}) for d in dicts]


def test_the_leaderboard_lists_the_fid_spread_over_extractor_seeds():
    from bench.tasks.generation.report import generation_extras

    records = [
        {
            "method": "odm",
            "seed": s,
            "evaluation": {
                "floors": {},
                "extractor_info": {"name": "classifier", "version": "abc"},
                "fid_by_extractor_seed": {"0": 40.0 + s, "1": 46.5, "2": 43.0},
            },
        }
        for s in (0, 1)
    ]
    text = "\n".join(generation_extras(as_records(records), ["odm"], ["fid"]))
    assert "seed 0 (0: 40.0, 1: 46.5, 2: 43.0; spread 6.5)" in text
    assert "seed 1 (0: 41.0, 1: 46.5, 2: 43.0; spread 5.5)" in text


def test_each_config_of_a_method_has_its_own_seeds_in_the_notes_and_per_class_table():
    """A method rerun under a new config hash has two rows, 'odm [old]' and 'odm [new]';
    every per-seed line and the per-class FID table give each row its own records (they
    listed all of the method's records under both)."""
    from bench.tasks.generation.report import generation_extras, per_class_fid_table

    def record(config_hash, seed, fid):
        return {
            "method": "odm",
            "config_hash": config_hash,
            "seed": seed,
            "metrics": {"test": {"fid": fid, "intensity_ratio": 0.9 + fid / 100}},
            "per_class": {"test": {"fid": [fid, 2 * fid], "n_reference": [3, 4]}},
            "evaluation": {
                "floors": {},
                "extractor_info": {"name": "classifier", "version": "abc"},
                "fid_ci95": [fid - 1, fid + 1],
                "fid_by_extractor_seed": {"0": fid, "1": fid + 1},
            },
        }

    records = as_records([record("old", 0, 4.0), record("old", 1, 5.0), record("new", 0, 3.0)])
    rows = ["odm [old]", "odm [new]"]
    text = "\n".join(generation_extras(records, rows, ["fid"]))
    assert "odm [old] [3.0, 5.0], [4.0, 6.0]; odm [new] [2.0, 4.0]." in text
    assert "odm [old] 0.94, 0.95; odm [new] 0.93." in text
    assert "odm [new] seed 0 (0: 3.0, 1: 4.0; spread 1.0)." in text
    table = [line for line in per_class_fid_table(records, rows) if line.startswith("| odm")]
    assert table == [
        "| odm [old] | 4.50 ± 0.71 | 9.00 ± 1.41 |",
        "| odm [new] | **3.00** | **6.00** |",
    ]


def test_intensity_ratio_finds_a_brightness_drift_that_the_copies_do_not_have(
    retina, extractor, tmp_path
):
    """The samples' mean intensity over the reference images': about 1 for training
    images, above the tolerance for the same images brightened (a grey background)."""
    from bench.api.method import Budget, RunContext
    from bench.tasks.generation.evaluate import evaluate_generator
    from bench.tasks.generation.floors import INTENSITY_TOLERANCE

    accelerator = make_accelerator("fp32", cpu=True)[0]
    settings = GenerationEval(**{**SETTINGS.__dict__, "bootstrap": 0})
    train = retina.splits["train"]

    class Copies:
        def __init__(self, lift: int):
            self.lift = lift

        def sample(self, labels, ctx):
            pools = {c: train.images[train.labels == c] for c in np.unique(labels)}
            out = np.stack([pools[c][i % len(pools[c])] for i, c in enumerate(labels)])
            return np.clip(out.astype(int) + self.lift, 0, 255).astype(np.uint8)

    ctx = RunContext(accelerator, 0, Budget(), tmp_path, lambda m: None, False)
    ratio = {
        lift: evaluate_generator(Copies(lift), retina, ctx, settings, extractor)["metrics"]["test"][
            "intensity_ratio"
        ]
        for lift in (0, 30)
    }
    assert abs(ratio[0] - 1) < INTENSITY_TOLERANCE < ratio[30] - 1, ratio


def test_the_leaderboard_marks_samples_brighter_or_darker_than_the_tolerance():
    from bench.tasks.generation.report import generation_extras

    records = [
        {
            "method": "dm",
            "seed": s,
            "metrics": {"test": {"fid": 5.0, "intensity_ratio": v}},
            "evaluation": {
                "floors": {"real training images": {"fid": 1.8, "intensity_ratio": 1.04}},
                "extractor_info": {"name": "classifier", "version": "abc"},
            },
        }
        for s, v in ((0, 1.05), (1, 1.15), (2, 0.85))
    ]
    line = [
        t for t in generation_extras(as_records(records), ["dm"], ["fid"]) if "Mean intensity" in t
    ]
    assert len(line) == 1, line
    assert "⚠ outside: 2" in line[0] and "dm 1.05, 1.15 ⚠, 0.85 ⚠" in line[0], line[0]
    assert "real training images 1.04" in line[0]
    old = [{k: v for k, v in r.items() if k != "metrics"} for r in records]
    assert not any(
        "Mean intensity" in t for t in generation_extras(as_records(old), ["dm"], ["fid"])
    )


def test_one_extractor_is_one_version_wherever_its_file_was():
    """Records scored by the same extractor weights (version) on two machines, whose cache
    files had other paths, share one feature space: one extractor line and no warning; two
    versions get the warning."""
    from bench.tasks.generation.report import generation_extras

    def record(seed, version, cache):
        info = {
            "name": "bench-classifier",
            "version": version,
            "file": f"{cache}/fid_extractor/k.extractor.pt",
            "trained_on": {"dataset": "retinamnist", "pretraining_file": f"{cache}/k.pt"},
        }
        return {"method": "dm", "seed": seed, "evaluation": {"floors": {}, "extractor_info": info}}

    same = [record(0, "abc", "runs/cache"), record(1, "abc", "/elsewhere/runs/cache")]
    text = "\n".join(generation_extras(as_records(same), ["dm"], ["fid"]))
    assert text.count("Extractor:") == 1 and "scored by" not in text
    other = [*same, record(2, "def", "runs/cache")]
    text = "\n".join(generation_extras(as_records(other), ["dm"], ["fid"]))
    assert text.count("Extractor:") == 2 and "scored by 2 extractors" in text
