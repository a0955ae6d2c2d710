"""Every committed leaderboard and paper table is what the committed code makes from the
committed records: none is stale or edited by hand."""

import re
from pathlib import Path

import matplotlib
import pytest
from conftest import REPO

from bench.engine.records import load_records
from bench.tools.leaderboard import write_leaderboard
from bench.tools.paper import write_paper
from bench.tools.perf_table import write_perf_table

RESULTS, TABLES = REPO / "results", REPO / "leaderboards"


@pytest.mark.parametrize("suite", ["classification", "generation", "restoration"])
def test_a_suite_leaderboard_is_rebuilt_identically(suite, tmp_path):
    if not load_records(RESULTS, suite):
        assert not (TABLES / f"{suite}.md").exists(), (
            f"leaderboards/{suite}.md has no records behind it"
        )
        return
    for path in write_leaderboard(suite, results_dir=RESULTS, out_dir=tmp_path):
        assert path.read_text() == (TABLES / path.name).read_text(), (
            f"leaderboards/{path.name} is stale: run bench leaderboard --suite {suite}"
        )


@pytest.mark.parametrize("paper", ["diffmic-v2", "dcube", "odm", "survey"])
def test_a_paper_table_is_rebuilt_identically(paper, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the table names its results folder as given: `results/`
    path = write_paper(paper, None, "results", None, tmp_path)
    assert path.read_text() == (TABLES / path.name).read_text(), (
        f"leaderboards/{path.name} is stale: run bench paper {paper}"
    )
    for plot in tmp_path.glob("*.png"):  # the sweep figures the table shows
        assert_committed_figure(plot, TABLES / plot.name, f"bench paper {paper}")


def assert_committed_figure(made: Path, committed: Path, remake: str) -> None:
    """`committed` exists and, under the matplotlib constraints.txt pins, has `made`'s
    bytes: another version (a lab's own, or the lowest pyproject.toml allows) writes
    other bytes for the same figure."""
    pinned = re.search(r"^matplotlib==(\S+)", (REPO / "constraints.txt").read_text(), re.M)[1]
    assert committed.is_file() and (
        matplotlib.__version__ != pinned or committed.read_bytes() == made.read_bytes()
    ), f"{committed.relative_to(REPO)} is stale: run {remake}"


def test_the_perf_table_is_rebuilt_identically(tmp_path):
    path = write_perf_table(RESULTS, tmp_path)
    assert path.read_text() == (TABLES / path.name).read_text(), (
        "leaderboards/perf.md is stale: run bench perf --table"
    )


def test_the_site_is_rebuilt_identically(tmp_path, monkeypatch, site_page):
    """The figures `bench site` writes into leaderboards/plots/ are the committed ones, and
    the page (4 MB with its figures inline, so built, not committed: `bench site`) comes
    out byte-identical twice. Its generation grids show real test images beside the
    samples, so where the data files the records name are not here the test says so."""
    from bench.tools.figures import real_test_images
    from bench.tools.site import write_site

    missing = {
        why
        for r in load_records(RESULTS, "generation")
        if isinstance(why := real_test_images(r), str)
    }
    if missing:
        pytest.skip(f"the page shows real test images, and {'; '.join(sorted(missing))}")
    monkeypatch.chdir(REPO)  # the page names its results folder as given: `results/`
    page, *plots = write_site("results", tmp_path / "index.html", tmp_path / "plots")
    # the session's page (conftest `site_page`) is the other build
    assert page.read_bytes() == site_page.read_bytes(), "two builds of the page differ"
    for path in plots:
        committed = TABLES / "plots" / path.relative_to(tmp_path / "plots")
        assert_committed_figure(path, committed, "bench site")
