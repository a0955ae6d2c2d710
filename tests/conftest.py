"""Shared fixtures. Real MedMNIST data comes from $BENCH_DATA_DIR, else ../shared/data/medmnist
when it holds the files, else the small committed subset in tests/fixtures/medmnist, so no
test skips for want of data. BENCH_TEST_FIXTURE_ONLY=1 forces the committed subset and hides
the official files (to check that the tests pass on a machine without them)."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_SUITE = str(REPO / "tests" / "suites" / "tiny.yaml")
FIXTURE_DATA = REPO / "tests" / "fixtures" / "medmnist"
SHARED_DATA = REPO.parent / "shared" / "data" / "medmnist"
FIXTURE_ONLY = os.environ.get("BENCH_TEST_FIXTURE_ONLY", "") not in ("", "0")
#: where the official files may be (read at import, before `isolated_env` repoints BENCH_DATA_DIR)
OFFICIAL_DIRS = (
    []
    if FIXTURE_ONLY
    else [Path(d).expanduser() for d in (os.environ.get("BENCH_DATA_DIR"), SHARED_DATA) if d]
)


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs two workers on this 2-core machine) each worker
    is one process on one core: one intra-op thread, also for the processes tests launch."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """The slow tests first: `make test` uses xdist's worksteal scheduling, so a worker that
    runs out of tests takes pending ones from the other; with the CPU-minute trainings at
    the front, both workers start on them and the many short tests fill in at the end,
    instead of one worker ending the run alone on a 5-minute test."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def real_data_dir() -> Path:
    if FIXTURE_ONLY:
        return FIXTURE_DATA
    if os.environ.get("BENCH_DATA_DIR"):
        return Path(os.environ["BENCH_DATA_DIR"]).expanduser().resolve()
    return SHARED_DATA.resolve() if (SHARED_DATA / "breastmnist.npz").is_file() else FIXTURE_DATA


def official_file(flag: str) -> Path:
    """The official 28 px MedMNIST file (its MD5 checked), or skip: for tests of exact counts."""
    from bench.data.locate import md5sum
    from bench.data.sources.medmnist import INFO

    for d in OFFICIAL_DIRS:
        path = d / f"{flag}.npz"
        if path.is_file() and md5sum(path) == INFO["datasets"][flag]["md5"]["28"]:
            return path
    pytest.skip(
        "BENCH_TEST_FIXTURE_ONLY=1 hides the official files"
        if FIXTURE_ONLY
        else f"the official {flag}.npz is not in {', '.join(map(str, OFFICIAL_DIRS))}"
    )


@pytest.fixture(scope="session", autouse=True)
def data_dir_stays_untouched():
    """No test writes into the data folder (checkpoints belong in tmp_path): it may be
    shared (../shared is read-only, except to root)."""
    d = real_data_dir()
    before = sorted(p.name for p in d.iterdir())
    yield
    after = sorted(p.name for p in d.iterdir())
    assert after == before, (
        f"tests wrote into the data folder {d}: {sorted(set(after) - set(before))}"
    )


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """Real data dir (see `real_data_dir`), a private cache, offline."""
    monkeypatch.setenv("BENCH_DATA_DIR", str(real_data_dir()))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: a second intra-op thread only contends (10x slower on a busy 2-core
    box). Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def data_dir() -> Path:
    return real_data_dir()


def whole_checkpoints(work_dir: Path) -> list[Path]:
    """The resume checkpoints under `work_dir` at their final names: one being written sits
    in a hidden staging folder beside it (`atomic_write`) and is not a checkpoint yet."""
    from bench.train.resume import SUFFIX

    return [
        p
        for p in Path(work_dir).rglob(f"*{SUFFIX}")
        if not any(part.startswith(".") for part in p.relative_to(work_dir).parts[:-1])
    ]


def write_binary_record(results, method: str, pred, labels, selection=None) -> None:
    """A `tiny` suite record (BreastMNIST, seed 0) of a binary model that predicts `pred`
    (probability 0.9 for it) on test images with `labels`: for leaderboard tests."""
    import numpy as np

    from bench.engine.records import unit_stem, write_record

    n = len(labels)
    recall = [float((pred[labels == k] == k).mean()) for k in (0, 1)]
    write_record(
        unit_stem(results, "tiny", "breastmnist", method, "h", 0),
        {
            "status": "ok", "suite": "tiny", "preset": "smoke", "dataset": "breastmnist", "method": method,
            "seed": 0, "config_hash": "h", "task": "binary", "class_names": ["m", "b"],
            "metrics": {"test": {"accuracy": float((pred == labels).mean()), "balanced_accuracy": float(np.mean(recall))}},
            "per_class": {"test": {"recall": recall}},
            "predicted_share": {"test": [float((pred == k).mean()) for k in (0, 1)]},
            "selection": selection or {},
            "data": {"split_hash": "x", "files": {}, "n": {"test": n}},
            "provenance": {"git_commit": "c", "git_dirty": False, "precision": "fp32"},
        },
        {"test_probs": np.where(np.eye(2, dtype=bool)[pred], 0.9, 0.1), "test_labels": labels, "test_ids": np.arange(n)},
    )  # fmt: skip


def tiny_run(tmp_path, *extra, work: bool = True, one_unit: bool = True) -> list[str]:
    """`bench run` arguments: the tiny suite (with `one_unit`, only ResNet-18 seed 0),
    records in tmp_path/r (and, with `work`, its work folder in tmp_path/w)."""
    unit = ["--methods", "resnet18", "--seeds", "0"] if one_unit else []
    where = ["--results-dir", str(tmp_path / "r")] + (
        ["--work-dir", str(tmp_path / "w")] if work else []
    )
    return ["run", "--suite", TINY_SUITE, *unit, *where, "--no-progress", *extra]


def tiny_leaderboard(tmp_path) -> list[str]:
    """`bench leaderboard` arguments: the tiny suite's records in tmp_path/r, tables to tmp_path/lb."""
    return [
        "leaderboard",
        "--suite",
        TINY_SUITE,
        "--results-dir",
        str(tmp_path / "r"),
        "--out-dir",
        str(tmp_path / "lb"),
    ]


#: the data and provenance blocks of a record a test writes by hand (one plausible unit)
FAKE_DATA = {
    "split_hash": "h",
    "files": {},
    "n": {"test": 156},
    "duplicates_across_splits": 0,
    "synthetic": False,
}
FAKE_PROVENANCE = {
    "git_commit": "c0ffee", "device": "cpu", "precision": "fp32", "packages": {"torch": "2.x"},
    "started": "2026-01-01T00:00:00", "finished": "2026-01-01T01:00:00", "command": "bench run",
}  # fmt: skip


@pytest.fixture(scope="session")
def site_page(tmp_path_factory) -> Path:
    """The leaderboard page of the committed records (`bench site`; about 4 MB, so built
    here once, not committed). BENCH_SITE_PAGE names a page already built instead."""
    if os.environ.get("BENCH_SITE_PAGE"):
        return Path(os.environ["BENCH_SITE_PAGE"])
    from bench.tools.site import write_site

    out, cwd = tmp_path_factory.mktemp("site"), os.getcwd()
    os.chdir(REPO)  # the page names its results folder as given: `results/`
    try:
        return write_site("results", out / "index.html", out / "plots")[0]
    finally:
        os.chdir(cwd)
