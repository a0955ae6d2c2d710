import json

from bench.perf import run_perf

TINY_V2 = {"image_size": 28, "roi_size": 7, "dcg_small_stem": True, "roi_encoder_small_stem": True, "latent_dim": 32,
           "global_encoder": "vit_tiny_patch16_224", "global_encoder_kwargs": {"patch_size": 4, "depth": 1}}


def test_perf_records_throughput_and_the_authors_pattern_side_by_side(tmp_path):
    runs = {}
    for authors in (False, True):
        record, path = run_perf("diffmic_v2", options=TINY_V2, classes=2, channels=1, image_size=28, batch_size=4,
                                train_batch_size=4, train_steps=1, repeats=1, authors_pattern=authors, cpu=True,
                                results_dir=tmp_path, log=lambda m: None)
        assert json.loads(path.read_text()) == json.loads(json.dumps(record, default=str))
        runs[authors] = record
    assert runs[False]["config"]["recompute_conditions"] is False and runs[True]["config"]["recompute_conditions"] is True
    assert runs[True]["provenance"]["precision"] == "fp32" and "authors" in runs[True]["pattern"]
    for r in runs.values():
        res = r["results"]
        assert res["train_images_per_s"] > 0 and res["inference_images_per_s"] > 0
        assert abs(res["batch1_ms_per_image"] - 1000 / res["batch1_images_per_s"]) < 1e-6
    assert len({p.name for p in tmp_path.rglob("*.json")}) == 2  # one record per pattern
