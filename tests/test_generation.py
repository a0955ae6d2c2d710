"""The generation suite end to end on real RetinaMNIST (tiny budgets): ODM, DM and the
conditional GAN train, sample and are scored with one shared, recorded extractor;
records carry per-class FID and the generated images; the leaderboard renders."""

import json

import numpy as np
import pytest

from bench.api.errors import BenchError

UNET = {
    "image_size": 16,
    "block_out_channels": [16, 32],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "attention_resolution": 8,
    "sampling_steps": 3,
}


def tiny_suite(tmp_path, methods, datasets=("retinamnist",)):
    path = tmp_path / "gen.yaml"
    path.write_text(
        json.dumps(
            {
                "description": "tiny generation",
                "task": "generation",
                "datasets": list(datasets),
                "seeds": [0],
                "reference": "odm",
                "methods": methods,
                "evaluation": {
                    "kid_subset_size": 20,
                    "extractor_epochs": 1,
                    "extractor_small_stem": False,
                    "samples_per_class": 8,
                },
                "presets": {
                    "smoke": {
                        "budget": {
                            "epochs": 1,
                            "batch_size": 32,
                            "eval_batch_size": 128,
                            "max_steps": 2,
                        }
                    }
                },
            }
        )
    )
    return path


@pytest.mark.slow
def test_generation_suite_scores_every_method_with_one_recorded_extractor(data_dir, tmp_path):
    from bench.engine.runner import run_suite
    from bench.tools.leaderboard import write_leaderboard

    suite = tiny_suite(
        tmp_path,
        [
            {"name": "odm", "options": UNET},
            {"name": "dm", "options": UNET},
            {"name": "cgan", "options": {"image_size": 16, "width": 8}},
        ],
    )
    outcomes = run_suite(
        str(suite), results_dir=tmp_path / "results", work_dir=tmp_path / "runs", progress=False
    )
    assert [o.status for o in outcomes] == ["ok"] * 3, outcomes
    records = {
        p.parent.parent.name: (p, json.loads(p.read_text()))
        for p in (tmp_path / "results").rglob("seed0.json")
    }
    assert set(records) == {"odm", "dm", "cgan"}
    versions = set()
    with np.load(
        data_dir / "retinamnist.npz"
    ) as npz:  # the official file (174, 46, 92, 68, 20) or the committed subset
        test_counts = np.bincount(npz["test_labels"].ravel(), minlength=5).tolist()
    for path, rec in records.values():
        m = rec["metrics"]["test"]
        assert (
            m["fid"] > 0
            and m["kid_mean"] is not None
            and 0 <= m["precision"] <= 1
            and 0 <= m["recall"] <= 1
        )
        pc = rec["per_class"]["test"]
        assert (
            len(pc["fid"]) == 5 and all(v > 0 for v in pc["fid"]) and pc["n_generated"] == [8] * 5
        )
        assert pc["n_reference"] == test_counts  # the test split's images per class
        info = rec["evaluation"]["extractor_info"]
        assert info["name"] == "bench-classifier" and info["trained_on"]["split"] == "train"
        # RetinaMNIST is ordinal: the samples' grades against those they were made for
        ordinal = rec["ordinal_consistency"]
        assert (
            ordinal["graded_by"] == info["version"] and len(ordinal["class_intensity_ratio"]) == 5
        )
        real = ordinal["real"]["qwk"]  # null where the one-epoch extractor grades one class only
        assert real is None or -1 <= real <= 1
        versions.add(info["version"])
        assert (path.parent / rec["evaluation"]["samples_png"]).is_file()
        with np.load(path.with_suffix(".npz")) as npz:
            assert npz["generated_images"].dtype == np.uint8 and npz["generated_images"].shape == (
                40,
                28,
                28,
                3,
            )
            assert np.array_equal(npz["generated_labels"], np.repeat(np.arange(5), 8))
    assert len(versions) == 1  # one extractor for every method
    assert (
        records["odm"][1]["selection"]["ordinal_loss"] == "on"
        and records["dm"][1]["selection"]["ordinal_loss"] == "off"
    )
    md, _ = write_leaderboard(str(suite), results_dir=tmp_path / "results", out_dir=tmp_path / "lb")
    text = md.read_text()
    assert "| method | seeds | fid | kid_mean | precision | recall |" in text
    assert "Per-class FID" in text and "lower is better for fid, kid_mean" in text
    assert "| _real test images (target)_ |" in text  # the ordinal consistency table
    per_class = text.split("Per-class FID")[1].split("Ordinal consistency")[0]
    per_class_rows = [
        line
        for line in per_class.splitlines()
        if line.startswith("| odm") or line.startswith("| dm") or line.startswith("| cgan")
    ]
    assert (
        sum("**" in line for line in per_class_rows[-3:]) >= 1
    )  # the best FID of each class is bold


def test_a_classification_method_is_refused_in_a_generation_suite(data_dir, tmp_path):
    from bench.engine.runner import run_suite

    suite = tiny_suite(tmp_path, ["resnet18"])
    with pytest.raises(
        BenchError, match="'resnet18' is a classification method; suite 'gen' is a generation suite"
    ):
        run_suite(
            str(suite), results_dir=tmp_path / "results", work_dir=tmp_path / "runs", progress=False
        )


def test_odm_does_not_apply_to_two_classes_and_is_left_out_of_a_run(data_dir, tmp_path):
    """ODM's ordinal loss needs an ordered triple: on BreastMNIST's 2 classes it would be
    the conditional DM trained again under ODM's name, so a suite run leaves it out and
    says why; with nothing else to run (or in a sweep), that is an input error and
    nothing is written."""
    from bench.api.registry import METHODS
    from bench.engine.runner import run_suite

    odm, dm = METHODS.get("odm"), METHODS.get("dm")
    assert "3 or more ordered classes and the data has 2" in odm.inapplicable({}, ("m", "b"))
    assert odm.inapplicable({}, ("0", "1", "2")) is None and dm.inapplicable({}, ("m", "b")) is None
    assert odm.inapplicable({"ordinal_weight": 0.0}, ("m", "b")) is None  # that is the DM
    suite = tiny_suite(tmp_path, [{"name": "odm", "options": UNET}], datasets=["breastmnist"])
    with pytest.raises(BenchError, match="nothing to run: odm on breastmnist: its ordinal loss"):
        run_suite(
            str(suite), results_dir=tmp_path / "results", work_dir=tmp_path / "runs", progress=False
        )
    assert not (tmp_path / "results").exists()
    from bench.tools.sweep import run_sweep

    with pytest.raises(BenchError, match="odm does not apply to breastmnist: its ordinal loss"):
        run_sweep(
            "odm",
            "breastmnist",
            ["guidance"],
            suite_name="generation",
            results_dir=tmp_path / "results",
            work_dir=tmp_path / "runs",
        )
    assert not (tmp_path / "results" / "sweeps").exists()


def test_a_table_where_the_reference_does_not_apply_tests_against_the_next_method(tmp_path):
    """BreastMNIST's generation table has no ODM (the suite's reference): it says why,
    and its marks are against `dm`, the suite's next method, not left out."""
    from bench.engine.records import unit_stem, write_record
    from bench.tools.leaderboard import write_leaderboard

    suite = tiny_suite(tmp_path, ["odm", "dm", "cgan"], datasets=["breastmnist"])
    fid = {"dm": [10.0, 11.0, 10.5], "cgan": [20.0, 21.5, 20.4]}
    for method, values in fid.items():
        for seed, value in enumerate(values):
            record = {
                "status": "ok",
                "suite": "gen",
                "preset": "smoke",
                "dataset": "breastmnist",
                "method": method,
                "seed": seed,
                "config_hash": "abc",
                "task": "binary",
                "class_names": ["malignant", "normal, benign"],
                "metrics": {"test": {"fid": value, "precision": 0.8, "recall": 0.3}},
                "evaluation": {"floors": {}, "extractor_info": {"version": "v"}},
                "data": {"split_hash": "h", "n": {"test": 156}},
                "provenance": {"git_commit": "c0ffee", "started": "a", "finished": "b"},
            }
            stem = unit_stem(tmp_path / "results", "gen", "breastmnist", method, "abc", seed)
            write_record(stem, record, {})
    md, csv = write_leaderboard(str(suite), results_dir=tmp_path / "results", out_dir=tmp_path)
    text = md.read_text()
    assert "`odm` does not apply to breastmnist: its ordinal loss needs 3 or more ordered" in text
    assert "marks here are against `dm`, the suite's next method" in text
    assert "No records of the reference" not in text
    (row,) = [line for line in text.splitlines() if line.startswith("| cgan |")]
    assert r"\*\*\*" in row.split("|")[3]  # cgan's FID differs from dm's on every seed
    assert any(line.startswith("| dm (ref) | 3 |") for line in text.splitlines())
    assert ",dm,ttest" in csv.read_text() and ",odm,ttest" not in csv.read_text()


def test_generation_suite_options_are_valid():
    from bench.api.registry import METHODS
    from bench.engine.config import load_suite
    from bench.tasks.generation.evaluate import GenerationEval

    suite = load_suite("generation")
    assert suite.task == "generation" and [m.name for m in suite.methods] == ["odm", "dm", "cgan"]
    for preset in ("smoke", "standard", "full"):
        p = suite.preset(preset)
        GenerationEval.from_options(suite.evaluation_for(p))
        for entry in suite.methods:
            METHODS.get(entry.name).make_config(suite.options_for(entry, p))
    with pytest.raises(
        BenchError, match="unknown option 'kid_subsets_size'; did you mean 'kid_subset_size'"
    ):
        GenerationEval.from_options({"kid_subsets_size": 10})
    with pytest.raises(BenchError, match="option 'bootstrap' must be an integer, not 'many'"):
        GenerationEval.from_options({"bootstrap": "many"})


@pytest.mark.slow
def test_rescore_scores_stored_samples_again_under_the_current_extractor(data_dir, tmp_path):
    """`bench rescore`: a record scored by another extractor version gets the numbers the
    current extractor gives its stored samples (the generator is not retrained), and keeps
    what it had before; a record the extractor already scored is left alone."""
    from bench.engine.runner import run_suite
    from bench.tasks.generation.rescore import rescore_generation

    suite = tiny_suite(tmp_path, [{"name": "cgan", "options": {"image_size": 16, "width": 8}}])
    kw = dict(results_dir=tmp_path / "results", work_dir=tmp_path / "runs")
    assert [o.status for o in run_suite(str(suite), progress=False, **kw)] == ["ok"]
    (path,) = (tmp_path / "results").rglob("seed0.json")
    original = json.loads(path.read_text())
    stale = json.loads(path.read_text())
    stale["evaluation"]["extractor_info"]["version"] = "0123456789abcdef"
    stale["metrics"]["test"]["fid"] = 999.0
    path.write_text(json.dumps(stale))

    from bench.tools.leaderboard import write_leaderboard

    md, _ = write_leaderboard(str(suite), results_dir=kw["results_dir"], out_dir=tmp_path / "lb")
    assert "`bench rescore`" not in md.read_text()  # one extractor: nothing to say
    other = {
        **stale,
        "seed": 1,
        "evaluation": {**stale["evaluation"], "extractor_info": {"version": "fedcba9876543210"}},
    }
    path.with_name("seed1.json").write_text(json.dumps(other))  # a second seed, another extractor
    path.with_name("seed1.npz").write_bytes(path.with_suffix(".npz").read_bytes())
    md, _ = write_leaderboard(str(suite), results_dir=kw["results_dir"], out_dir=tmp_path / "lb")
    assert "scored by 2 extractors" in md.read_text() and "`bench rescore`" in md.read_text()
    path.with_name("seed1.json").unlink(), path.with_name("seed1.npz").unlink()

    (line,) = rescore_generation(str(suite), "smoke", log=lambda m: None, **kw)
    assert line["status"] == "rescored" and line["old_fid"] == 999.0
    rescored = json.loads(path.read_text())
    assert rescored["metrics"]["test"]["fid"] == pytest.approx(original["metrics"]["test"]["fid"])
    assert rescored["metrics"]["test"]["recall"] == pytest.approx(
        original["metrics"]["test"]["recall"]
    )
    assert rescored["evaluation"]["extractor_info"] == original["evaluation"]["extractor_info"]
    (previous,) = rescored["rescored"]
    assert previous["extractor_version"] == "0123456789abcdef" and previous["test"]["fid"] == 999.0
    assert rescored["selection"] == original["selection"]  # the training's part is kept as it was

    (again,) = rescore_generation(str(suite), "smoke", log=lambda m: None, **kw)
    assert again["status"].startswith("skipped: already scored by")
    with pytest.raises(BenchError, match="no ok records"):
        rescore_generation(str(suite), "smoke", datasets=["breastmnist"], **kw)


@pytest.mark.slow
def test_a_guidance_sweep_trains_once_and_selects_on_validation_fid(data_dir, tmp_path):
    """A generation sweep is judged by the FID of samples drawn for the validation labels
    (the noise loss does not change with guidance), and grid points that differ only in
    guidance share one trained model."""
    import optuna

    from bench.tools.sweep import run_sweep

    suite = tiny_suite(tmp_path, [{"name": "odm", "options": UNET}])
    out = run_sweep(
        "odm", "retinamnist", ["guidance"], suite_name=str(suite), grid=True,
        values={"guidance": [1.0, 2.0]}, data_dir=str(data_dir),
        results_dir=tmp_path / "results", work_dir=tmp_path / "runs",
    )  # fmt: skip
    study = optuna.load_study(
        study_name=out["study"],
        storage=f"sqlite:///{tmp_path / 'results' / 'sweeps' / (out['study'] + '.db')}",
    )
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.user_attrs["objective"] == "validation fid"
    records = [json.loads(open(t.user_attrs["record"]).read()) for t in study.trials]
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    fids = [r["metrics"]["val"]["fid"] for r in records]
    assert [t.value for t in study.trials] == pytest.approx(fids) and fids[0] != fids[1]
    assert out["best"]["value"] == pytest.approx(min(fids))
    assert sorted(r["selection"]["cache"] for r in records) == ["hit", "miss"]
    assert all(
        "qwk_gap" in r["metrics"]["val"] or r["metrics"]["val"].keys() == {"fid"} for r in records
    )
    assert all(r["metrics"]["test"]["fid"] > 0 for r in records)
