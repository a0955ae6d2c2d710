import numpy as np
import pytest
from conftest import FAKE_DATA, FAKE_PROVENANCE, TINY_SUITE
from scipy import stats as sps

from bench.api.record import Record, Selection
from bench.engine.records import unit_stem, write_record
from bench.metrics.classification import compute_all
from bench.tools.leaderboard import write_leaderboard
from bench.tools.mdhtml import inline

ACC = {  # method -> accuracy per seed (resnet18 is the tiny suite's reference)
    "resnet18": [0.70, 0.72, 0.71],
    "vit_tiny_patch16_224": [0.80, 0.83, 0.81],
    "resnet50": [0.69, 0.74, 0.70],
}


def _write_records(results, preset="smoke", config_hash="abc", precision="fp32", shift=0.0):
    for method, accs in ACC.items():
        for seed, acc in enumerate(accs):
            acc += shift * (seed + 1)  # a difference that varies by seed
            record = {
                "status": "ok",
                "suite": "tiny",
                "preset": preset,
                "dataset": "breastmnist",
                "method": method,
                "seed": seed,
                "config_hash": config_hash,
                "task": "binary",
                "class_names": ["m", "b"],
                "metrics": {
                    "test": {
                        "accuracy": acc,
                        "ece": 1 - acc,
                        "auroc": float("nan") if method == "resnet50" else acc,
                    }
                },
                "data": {
                    "split_hash": "h",
                    "files": {"/x/breastmnist.npz": "md5"},
                    "n": {"test": 156},
                    "duplicates_across_splits": 0,
                    "synthetic": False,
                },
                "provenance": {
                    "git_commit": "c0ffee",
                    "git_dirty": False,
                    "command": f"/repo/bench/cli.py run --suite tiny --seeds {seed}",
                    "device": "cpu",
                    "precision": precision,
                    "packages": {"torch": "2.x"},
                    "started": f"2026-01-0{seed + 1}T00:00:00",
                    "finished": f"2026-01-0{seed + 1}T01:00:00",
                },
            }
            write_record(
                unit_stem(results, "tiny", "breastmnist", method, config_hash, seed),
                record,
                {"test_probs": np.zeros((1, 2))},
            )


def test_table_ranks_marks_and_is_rebuilt_identically(tmp_path):
    _write_records(tmp_path / "results")
    md_path, csv_path = write_leaderboard(
        TINY_SUITE, results_dir=tmp_path / "results", out_dir=tmp_path / "lb"
    )
    md = md_path.read_text()
    row = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in md.splitlines()
        if line.startswith("| ") and "---" not in line
    }
    header = row.pop("method")
    acc, ece, auroc = header.index("accuracy"), header.index("ece"), header.index("auroc")
    p_vit = sps.ttest_rel(ACC["vit_tiny_patch16_224"], ACC["resnet18"]).pvalue
    assert p_vit < 0.01
    # the mark's asterisks escaped, so they do not run into the bold: on the site (and in any
    # Markdown viewer) the cell reads as the bold value, then "***"
    assert row["vit_tiny_patch16_224"][acc] == r"**0.813 ± 0.015**\*\*\*"
    assert inline(row["vit_tiny_patch16_224"][acc]) == "<strong>0.813 ± 0.015</strong>***"
    legend = next(line for line in md.splitlines() if "Marks:" in line)
    assert "*** p &lt; 0.01, ** p &lt; 0.05, * p &lt; 0.1. <strong>Best</strong> in bold" in inline(
        legend
    )
    assert (
        row["resnet18 (ref)"][acc] == "<u>0.710 ± 0.010</u>"
    )  # second; the reference gets no mark
    p_r50 = sps.ttest_rel(ACC["resnet50"], ACC["resnet18"]).pvalue
    assert (
        p_r50 > 0.1 and row["resnet50"][acc] == "<u>0.710 ± 0.026</u>"
    )  # the same shown value: the same emphasis
    assert row["vit_tiny_patch16_224"][ece].startswith("**0.187")  # lower ECE is better
    assert row["resnet50"][auroc] == "n/a" and row["resnet18 (ref)"][0] == "3"
    assert (
        "commit c0ffee" in md
        and "2026-01-01T00:00:00 to 2026-01-03T01:00:00" in md
        and "split hash `h`" in md
    )
    csv = csv_path.read_text()
    assert f"{p_vit:.6g}" in csv
    first = md_path.read_bytes()
    write_leaderboard(TINY_SUITE, results_dir=tmp_path / "results", out_dir=tmp_path / "lb")
    assert md_path.read_bytes() == first


def test_records_not_made_by_bench_are_named_in_the_header(tmp_path):
    import json

    _write_records(tmp_path / "results")
    md = write_leaderboard(TINY_SUITE, results_dir=tmp_path / "results", out_dir=tmp_path / "lb")
    assert "Not made by" not in md[0].read_text()
    path = unit_stem(tmp_path / "results", "tiny", "breastmnist", "resnet50", "abc", 2)
    path = path.with_suffix(".json")
    record = json.loads(path.read_text())
    record["provenance"]["command"] = ".gpu/run.py run --suite .gpu/generation.yaml"
    path.write_text(json.dumps(record))
    md = write_leaderboard(TINY_SUITE, results_dir=tmp_path / "results", out_dir=tmp_path / "lb")
    (line,) = [x for x in md[0].read_text().splitlines() if "Not made by" in x]
    assert "1 of the records were made by another program (`.gpu/run.py`)" in line
    assert line.endswith(": breastmnist/resnet50/seed2")


def test_no_records_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="no complete records for suite 'tiny'"):
        write_leaderboard(TINY_SUITE, results_dir=tmp_path, out_dir=tmp_path / "lb")


def test_each_preset_gets_its_own_table_with_plain_method_names(tmp_path):
    _write_records(tmp_path / "results")
    _write_records(tmp_path / "results", preset="full", config_hash="def")
    md = write_leaderboard(TINY_SUITE, results_dir=tmp_path / "results", out_dir=tmp_path / "lb")[
        0
    ].read_text()
    assert "## breastmnist (full)" in md and "## breastmnist (smoke)" in md
    assert md.count("| resnet18 (ref) | 3 |") == 2 and "[abc]" not in md


def test_a_table_without_reference_records_says_so(tmp_path):
    _write_records(tmp_path / "results")
    md = write_leaderboard(
        TINY_SUITE,
        results_dir=tmp_path / "results",
        out_dir=tmp_path / "lb",
        reference="diffmic_v2",
    )[0].read_text()
    assert (
        "No records of the reference `diffmic_v2` for this table yet: no significance marks." in md
    )
    assert "0.813 ± 0.015**" in md and "0.813 ± 0.015*" not in md.replace("0.813 ± 0.015**", "")


def test_fp32_and_bf16_runs_of_one_method_are_told_apart_and_compared(tmp_path):
    _write_records(tmp_path / "results")
    _write_records(tmp_path / "results", config_hash="b16", precision="bf16", shift=0.01)
    md = write_leaderboard(TINY_SUITE, results_dir=tmp_path / "results", out_dir=tmp_path / "lb")[
        0
    ].read_text()
    assert (
        "| resnet18 · fp32 (ref) | 3 |" in md
        and "| resnet18 · bf16 | 3 |" in md
        and "[abc]" not in md
        and "No records of the reference" not in md
    )
    check = md[md.index("Precision check") :]
    row = next(
        line
        for line in check.splitlines()
        if line.startswith("| vit_tiny_patch16_224 | accuracy |")
    )
    fp32 = np.array(ACC["vit_tiny_patch16_224"])
    bf16 = fp32 + 0.01 * np.arange(1, 4)
    p = sps.ttest_rel(bf16, fp32).pvalue
    assert (
        f"| {fp32.mean():.3f} ± {fp32.std(ddof=1):.3f} | {bf16.mean():.3f} ± {bf16.std(ddof=1):.3f} | +0.020 | {p:.2f} | 0, 1, 2 |"
        in row
    )


def test_floors_flag_results_that_do_not_beat_them_and_one_class_models(tmp_path):
    """BreastMNIST-like test split (73 % class 1): a model at chance AUROC and one that
    predicts class 1 for every image are flagged, never bold; the floors are rows."""
    labels = np.array([0] * 42 + [1] * 114)
    rng = np.random.default_rng(0)
    good = np.clip(labels * 0.6 + rng.uniform(0, 0.4, len(labels)), 0, 1)  # separates the classes
    models = {
        "resnet18": lambda s: good,
        "vit_tiny_patch16_224": lambda s: 0.5 + 0.4 * rng.uniform(size=len(labels)),  # all class 1
        "resnet50": lambda s: 1 - good,
    }  # ranks the classes the wrong way round
    for method, score in models.items():
        for seed in range(3):
            p1 = score(seed)
            probs = np.stack([1 - p1, p1], axis=1)
            record = {
                "status": "ok",
                "suite": "tiny",
                "preset": "smoke",
                "dataset": "breastmnist",
                "method": method,
                "seed": seed,
                "config_hash": "abc",
                "task": "binary",
                "class_names": ["m", "b"],
                "metrics": {"test": compute_all(labels, probs, "binary")},
                "data": dict(FAKE_DATA),
                "provenance": dict(FAKE_PROVENANCE),
            }
            write_record(
                unit_stem(tmp_path / "results", "tiny", "breastmnist", method, "abc", seed),
                record,
                {"test_probs": probs.astype(np.float32), "test_labels": labels},
            )
    md = write_leaderboard(TINY_SUITE, results_dir=tmp_path / "results", out_dir=tmp_path / "lb")[
        0
    ].read_text()
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in md.splitlines()
        if line.startswith("| ") and "---" not in line
    }
    header = rows.pop("method")
    acc, bacc, auroc = (
        header.index("accuracy"),
        header.index("balanced_accuracy"),
        header.index("auroc"),
    )
    assert (
        rows["_majority class (floor)_"][acc] == "_0.731_"
        and rows["_majority class (floor)_"][auroc] == "_0.500_"
    )
    assert rows["_chance (floor)_"][bacc] == "_0.500_"
    one_class = rows["vit_tiny_patch16_224 ⚠ at its floor (3/3 seeds)"]
    assert one_class[acc].startswith("0.731 ± 0.000 ⚠") and not any(
        c.startswith(("**", "<u>")) for c in one_class
    )
    assert rows["resnet50"][auroc].startswith("0.000 ± 0.000 ⚠") and "⚠" in rows["resnet50"][acc]
    assert (
        rows["resnet18 (ref)"][auroc] == "1.000 ± 0.000"
    )  # the only real result: nothing to rank it against
    assert "⚠ marks" in md and "1 method row(s) with a seed at its floor" in md
    assert "⚠ At its floor (not ranked): vit_tiny_patch16_224 seed 0: predicts one class;" in md


def test_a_prior_row_is_tested_against_its_own_method_not_the_reference(tmp_path):
    """vit_tiny's records carry a prior whose accuracy sits a seed-varying amount below
    vit_tiny's: its row is marked by the paired test against vit_tiny, never ranked."""
    results = tmp_path / "results"
    _write_records(results)
    prior_acc = [a - d for a, d in zip(ACC["vit_tiny_patch16_224"], (0.10, 0.11, 0.12))]
    for seed, acc in enumerate(prior_acc):
        stem = unit_stem(results, "tiny", "breastmnist", "vit_tiny_patch16_224", "abc", seed)
        record = __import__("json").loads(stem.with_suffix(".json").read_text())
        record["priors"] = {"f_phi": {"test": {"accuracy": acc, "predicted_share": [0.4, 0.6]}}}
        write_record(stem, record, {"test_probs": np.zeros((1, 2))})
    md = write_leaderboard(TINY_SUITE, results_dir=results, out_dir=tmp_path / "lb")[0].read_text()
    row = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in md.splitlines()
        if line.startswith("| ") and "---" not in line
    }
    acc = row.pop("method").index("accuracy")
    p_own = sps.ttest_rel(prior_acc, ACC["vit_tiny_patch16_224"]).pvalue
    p_ref = sps.ttest_rel(prior_acc, ACC["resnet18"]).pvalue
    assert p_own < 0.01 < 0.1 < p_ref  # the two tests disagree: the mark says which one ran
    assert (
        row["vit_tiny_patch16_224 ▸ f_phi (its prior)"][acc] == r"0.703 ± 0.015\*\*\*"
    )  # never bold
    assert row["vit_tiny_patch16_224"][acc].startswith("**0.813")


def test_a_method_best_at_its_last_epoch_is_noted_as_not_converged():
    from bench.report.notes import convergence_note

    def rec(method, best, run=25, metric="auroc"):
        return Record(
            suite="s",
            preset="p",
            dataset="d",
            method=method,
            seed=0,
            config_hash="h",
            status="ok",
            selection=Selection(selection_metric=metric, best_epoch=best, epochs_run=run),
        )

    records = [
        rec("a", 25),
        rec("a", 20),
        rec("b", 10),
        rec("c", 19, 19, metric=None),
    ]  # c: no validation by design
    assert convergence_note(records) == [
        "",
        "Not converged (best validation epoch = the last, so more budget may change the number): a 1/2 seeds.",
    ]
    assert convergence_note([rec("b", 10)]) == []
    rerun = rec("a", 10)
    rerun.config_hash = "h2"  # two configs of a method: two rows, each noted with its seeds
    assert convergence_note([rec("a", 25), rerun])[1].endswith(": a [h] 1/1 seeds.")
