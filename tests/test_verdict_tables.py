"""Classification tables a person can read: each opens with its verdict (DeLong and
seed-paired t intervals of the AUROC difference), the ablation variants get a table of
their own, a prior shared by several rows is printed once, and a variant that is its
prior (DiffMIC-v2's C1: its DCG's global branch) is labelled so and never ranked.
Built from a copy of committed RetinaMNIST `standard` records."""

import re
import shutil

import numpy as np
import pytest
from conftest import REPO

from bench.engine.records import load_records
from bench.report.aggregate import PRIOR
from bench.report.delong import delong_difference
from bench.tools.leaderboard import write_leaderboard

METHODS = ["resnet18", "diffmic_v2"] + [f"diffmic_v2_c{i}" for i in range(1, 7)]


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("verdict")
    src = REPO / "results" / "classification" / "retinamnist"
    for method in METHODS:  # seeds 0-2 of every config (the full preset's resnet18 too)
        for config in (src / method).iterdir():
            dest = tmp / "results" / "classification" / "retinamnist" / method / config.name
            dest.mkdir(parents=True)
            for f in config.glob("seed[012].*"):
                shutil.copy(f, dest / f.name)
    md = write_leaderboard("classification", tmp / "results", tmp / "lb")[0].read_text()
    return tmp, md


def sections(md):
    """{heading: text} of the tables of one page."""
    parts = re.split(r"^(##+ .*)$", md, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def rows(text):
    return [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]


def test_every_table_opens_with_its_verdict(board):
    _, md = board
    tables = {h: t for h, t in sections(md).items() if "| method | seeds |" in t}
    assert len(tables) >= 3
    for heading, text in tables.items():
        assert text.index("**Verdict**") < text.index("| method | seeds |"), heading
    # the full preset's RetinaMNIST table has its reference alone: it says so
    alone = sections(md)["## retinamnist (full)"]
    assert "**Verdict**: nothing to compare here yet (only `resnet18`)." in alone


def test_ablations_have_their_own_table_with_the_shared_prior_printed_once(board):
    _, md = board
    parts = sections(md)
    main = next(t for h, t in parts.items() if h == "## retinamnist (standard)")
    ablation = next(t for h, t in parts.items() if "ablations of diffmic_v2" in h)
    main_rows, abl_rows = (
        rows(main.split("| method | seeds |")[1]),
        rows(ablation.split("| method | seeds |")[1]),
    )
    assert not any(r.startswith("diffmic_v2_c") for r in main_rows)
    variants = [f"diffmic_v2_c{i}" for i in range(1, 7)] + ["diffmic_v2"]
    method_rows = [r for r in abl_rows if PRIOR not in r and not r.startswith("_")]
    assert [r.split(" ")[0] for r in method_rows] == variants
    # each distinct prior is printed once, naming every row it is the prior of (the rows
    # share one DCG where they were trained with it; a rerun elsewhere has its own)
    for branch in ("DCG fused", "DCG global", "DCG local"):
        served = []
        for r in abl_rows:
            if not (PRIOR in r and r.split(PRIOR)[1].startswith(branch)):
                continue
            if r.endswith("(the prior of every row)"):
                served += variants
            else:
                others = re.search(r"\(its prior(?:; the same for (.*))?\)$", r)[1]
                served += [r.split(PRIOR)[0].strip()] + (others.split(", ") if others else [])
        assert sorted(served) == sorted(variants), branch
        assert sum(branch in r for r in main_rows) == 1  # diffmic_v2's own, once
    assert [r.split(" ")[0] for r in method_rows if "DCG global" in r] == ["diffmic_v2_c1"]


def test_a_variant_that_is_its_prior_is_labelled_and_not_crowned(board):
    _, md = board
    ablation = next(t for h, t in sections(md).items() if "ablations of diffmic_v2" in h)
    line = next(x for x in ablation.splitlines() if x.startswith("| diffmic_v2_c1 ("))
    assert "(= DCG global: the same predictions)" in line
    assert "**" not in line and "<u>" not in line


def test_the_verdict_numbers_are_delong_and_the_seed_paired_t(board):
    tmp, md = board
    main = sections(md)["## retinamnist (standard)"]
    line = next(x for x in main.splitlines() if x.startswith("| diffmic_v2 | `resnet18` |"))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    records = load_records(tmp / "results", "classification")
    mine = {r.seed: r.load_predictions() for r in records if r.method == "diffmic_v2"}
    ref = {
        r.seed: r.load_predictions()
        for r in records
        if r.method == "resnet18" and r.preset == "standard"
    }
    seeds = sorted(set(mine) & set(ref))
    want = delong_difference(
        mine[seeds[0]]["test_labels"],
        [(mine[s]["test_probs"].astype(float), ref[s]["test_probs"].astype(float)) for s in seeds],
        "ordinal",
    )
    assert cells[2] == str(len(seeds))
    assert float(cells[3]) == pytest.approx(want["difference"], abs=5e-4)
    lo, hi = (float(v) for v in cells[4].strip("[]").split(","))
    assert (lo, hi) == pytest.approx((want["ci_low"], want["ci_high"]), abs=5e-4)
    t_lo, t_hi = (float(v) for v in cells[6].strip("[]").split(","))
    assert t_lo < lo and t_hi > hi  # three seeds: the t interval is the wider here
    assert cells[8] == "no detectable difference" and lo < 0 < hi and np.isfinite(want["se"])


def test_a_dataset_at_another_size_is_compared_with_itself_on_the_same_test_images(tmp_path):
    """breastmnist_64 (MedMNIST+: the same split at 64 px) gets a block of each method
    against itself on breastmnist, DeLong pairing the same test images; breastmnist (the
    first of the two) and retinamnist (another split) get none."""
    src = REPO / "results" / "classification"
    for dataset in ("breastmnist", "breastmnist_64", "retinamnist"):
        config = src / dataset / "resnet18" / "b59bd1673f"
        dest = tmp_path / "results" / "classification" / dataset / "resnet18" / config.name
        dest.mkdir(parents=True)
        for f in config.glob("seed[012].*"):
            shutil.copy(f, dest / f.name)
    md = write_leaderboard("classification", tmp_path / "results", tmp_path / "lb")[0].read_text()
    parts = sections(md)
    assert "**Against" not in parts["## breastmnist (standard)"]
    assert "**Against" not in parts["## retinamnist (standard)"]
    block = parts["## breastmnist_64 (standard)"].split("**Against `breastmnist`**")[1]
    line = next(
        x for x in block.splitlines() if x.startswith("| resnet18 | itself on `breastmnist` |")
    )
    cells = [c.strip() for c in line.split("|")[1:-1]]
    records = load_records(tmp_path / "results", "classification")
    by = {
        d: {r.seed: r.load_predictions() for r in records if r.dataset == d}
        for d in ("breastmnist", "breastmnist_64")
    }
    want = delong_difference(
        by["breastmnist"][0]["test_labels"],
        [
            (
                by["breastmnist_64"][s]["test_probs"].astype(float),
                by["breastmnist"][s]["test_probs"].astype(float),
            )
            for s in (0, 1, 2)
        ],
        "binary",
    )
    assert cells[2] == "3"
    assert float(cells[3]) == pytest.approx(want["difference"], abs=5e-4)
    lo, hi = (float(v) for v in cells[4].strip("[]").split(","))
    assert (lo, hi) == pytest.approx((want["ci_low"], want["ci_high"]), abs=5e-4)
